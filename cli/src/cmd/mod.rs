//! The command line: every flag with its help text, in one place, and the mapping of
//! library errors to one-line messages, hints and documented exit codes.

mod diff;
mod inspect;
mod list;
mod pack;
mod promote;
mod pull;
mod push;
mod sign;
pub mod signing;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use berth::artifact::ArtifactError;
use berth::input::InputError;
use berth::layout::LayoutError;
use berth::manifests::ManifestError;
use berth::reference::{Reference, ReferenceError};
use berth::registry::{Credentials, Registry, RegistryError, RegistryOptions};
use berth::transfer::TransferError;

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  unexpected error (I/O, internal)
  2  usage error (bad flag, argument or reference)
  3  invalid input (manifests, files, layout; nothing was pushed)
  4  registry or network error (unreachable, rejected, protocol)
  5  authentication or authorization failed
  6  not found (repository, tag, digest)
  7  verification failed (digest or signature mismatch, unsafe artifact content)";

/// Pack rendered Kubernetes manifests into signed, reproducible OCI artifacts,
/// push them to any registry and promote them by digest.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, after_long_help = EXIT_CODES_HELP, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Registry credentials as USER:PASSWORD (default: BERTH_REGISTRY_USER/BERTH_REGISTRY_PASSWORD,
    /// then Docker's config.json and credential helpers, else anonymous).
    #[arg(
        long,
        global = true,
        value_name = "USER:PASSWORD",
        hide_env_values = true
    )]
    pub creds: Option<String>,
    /// PEM file with CA certificates to trust for registry TLS, in addition to the system roots.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Talk plain HTTP to the registry (no TLS). Only for registries without TLS.
    #[arg(long, global = true)]
    pub insecure: bool,
    /// Log level on stderr: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "warn", value_name = "LEVEL")]
    pub log_level: String,
    /// Output format on stdout: human text or JSON for scripts.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate manifests and write the artifact as an OCI image layout; print its digest.
    Pack(pack::PackArgs),
    /// Validate manifests, push them as an artifact and print its digest.
    Push(push::PushArgs),
    /// Pull an artifact and unpack its files safely into a directory.
    Pull(pull::PullArgs),
    /// Show an artifact's manifest, annotations, files and object count.
    Inspect(inspect::InspectArgs),
    /// Show what pushing PATH would change compared with an artifact, per object.
    Diff(diff::DiffArgs),
    /// List a repository's tags with digest, created time, source and revision.
    List(list::ListArgs),
    /// Copy an artifact by digest to another repository or registry and tag it there.
    Promote(promote::PromoteArgs),
    /// Write a cosign-compatible key pair (encrypted PREFIX.key, PEM PREFIX.pub).
    Keygen(sign::KeygenArgs),
    /// Sign an artifact digest, cosign-compatible (classic .sig tag or Sigstore bundle referrer).
    Sign(sign::SignArgs),
    /// Verify an artifact's cosign signatures (both formats) against public keys or keyless identities.
    Verify(sign::VerifyArgs),
    /// Print a shell completion script.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Run the parsed command line.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    let global = cli.global;
    match cli.command {
        Command::Pack(args) => pack::run(&global, args).await,
        Command::Push(args) => push::run(&global, args).await,
        Command::Pull(args) => pull::run(&global, args).await,
        Command::Inspect(args) => inspect::run(&global, args).await,
        Command::Diff(args) => diff::run(&global, args).await,
        Command::List(args) => list::run(&global, args).await,
        Command::Promote(args) => promote::run(&global, args).await,
        Command::Keygen(args) => sign::keygen(&global, args),
        Command::Sign(args) => sign::sign(&global, args).await,
        Command::Verify(args) => sign::verify(&global, args).await,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "berth", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// The documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Generic = 1,
    Usage = 2,
    InvalidInput = 3,
    Registry = 4,
    Auth = 5,
    NotFound = 6,
    Verification = 7,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// A failed command: one line of message, one line of hint, an exit code.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
    pub hint: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>, hint: impl Into<String>) -> Failure {
        Failure {
            exit,
            message: message.into(),
            hint: hint.into(),
        }
    }

    pub fn usage(message: impl Into<String>, hint: impl Into<String>) -> Failure {
        Failure::new(Exit::Usage, message, hint)
    }
}

impl From<RegistryError> for Failure {
    fn from(e: RegistryError) -> Failure {
        let exit = match &e {
            RegistryError::Unauthorized { .. } => Exit::Auth,
            RegistryError::NotFound { .. } => Exit::NotFound,
            RegistryError::DigestMismatch { .. } | RegistryError::SizeMismatch { .. } => {
                Exit::Verification
            }
            RegistryError::CaFile { .. } => Exit::Usage,
            RegistryError::Io { .. } | RegistryError::Write { .. } => Exit::Generic,
            _ => Exit::Registry,
        };
        Failure::new(exit, e.to_string(), e.hint())
    }
}

impl From<ArtifactError> for Failure {
    fn from(e: ArtifactError) -> Failure {
        let exit = match &e {
            ArtifactError::Write { .. } => Exit::Generic,
            ArtifactError::UnsafeEntry { .. }
            | ArtifactError::TooLarge { .. }
            | ArtifactError::Corrupt { .. } => Exit::Verification,
            ArtifactError::InvalidCreated { .. } | ArtifactError::InvalidAnnotation { .. } => {
                Exit::Usage
            }
            ArtifactError::UnsafeDestination { .. } => Exit::Generic,
            _ => Exit::InvalidInput,
        };
        Failure::new(exit, e.to_string(), e.hint())
    }
}

impl From<InputError> for Failure {
    fn from(e: InputError) -> Failure {
        ArtifactError::from(e).into()
    }
}

impl From<ManifestError> for Failure {
    fn from(e: ManifestError) -> Failure {
        ArtifactError::from(e).into()
    }
}

impl From<LayoutError> for Failure {
    fn from(e: LayoutError) -> Failure {
        let exit = match &e {
            LayoutError::Io { .. } => Exit::Generic,
            LayoutError::Corrupt { .. } => Exit::Verification,
            _ => Exit::InvalidInput,
        };
        Failure::new(exit, e.to_string(), e.hint())
    }
}

impl From<TransferError> for Failure {
    fn from(e: TransferError) -> Failure {
        match e {
            TransferError::Registry(e) => e.into(),
            TransferError::Artifact(e) => e.into(),
            TransferError::Layout(e) => e.into(),
            other => Failure::new(Exit::Generic, other.to_string(), other.hint()),
        }
    }
}

impl From<ReferenceError> for Failure {
    fn from(e: ReferenceError) -> Failure {
        Failure::usage(
            e.to_string(),
            "write references as oci://HOST[:PORT]/REPOSITORY[:TAG|@sha256:DIGEST]",
        )
    }
}

/// Parse a reference argument.
pub fn parse_reference(arg: &str) -> Result<Reference, Failure> {
    Ok(arg.parse::<Reference>()?)
}

/// Environment variables with registry credentials, used when `--creds` is not given.
pub const ENV_USER: &str = "BERTH_REGISTRY_USER";
pub const ENV_PASSWORD: &str = "BERTH_REGISTRY_PASSWORD";

impl Global {
    /// Registry options for `host` from the global flags.
    pub fn registry_options(&self, host: &str) -> Result<RegistryOptions, Failure> {
        Ok(RegistryOptions {
            credentials: self.credentials(host)?,
            ca_file: self.ca_file.clone(),
            insecure: self.insecure,
        })
    }

    /// The credentials for `host`: `--creds` when given, else the ambient ones (see
    /// [`ambient_credentials`]). The CLI is the only caller that chooses ambient credentials.
    fn credentials(&self, host: &str) -> Result<Credentials, Failure> {
        let Some(value) = &self.creds else {
            return Ok(ambient_credentials(host));
        };
        match value.split_once(':') {
            Some((user, password)) if !user.is_empty() => Ok(Credentials::Given {
                user: user.to_string(),
                password: password.to_string(),
            }),
            _ => Err(Failure::usage(
                "--creds must be USER:PASSWORD",
                "e.g. --creds ci-bot:$REGISTRY_TOKEN, or set BERTH_REGISTRY_USER and BERTH_REGISTRY_PASSWORD",
            )),
        }
    }

    /// A registry client for `reference`'s host.
    pub fn registry(&self, reference: &Reference) -> Result<Registry, Failure> {
        Ok(Registry::for_reference(
            reference,
            &self.registry_options(reference.registry())?,
        )?)
    }

    pub fn json(&self) -> bool {
        self.output == OutputFormat::Json
    }
}

/// The credentials a CLI user has for `host` without passing `--creds`: `BERTH_REGISTRY_USER`
/// and `BERTH_REGISTRY_PASSWORD`, else Docker's `config.json` and its credential helpers, else
/// none (anonymous). Only the command layer reads these; the library is handed the result,
/// and the agent, which links the same library, cannot come by them.
fn ambient_credentials(host: &str) -> Credentials {
    if let (Ok(user), Ok(password)) = (std::env::var(ENV_USER), std::env::var(ENV_PASSWORD)) {
        return Credentials::Given { user, password };
    }
    // config.json keys are written with or without a scheme depending on the tool.
    for key in [
        host.to_string(),
        format!("https://{host}"),
        format!("http://{host}"),
    ] {
        match docker_credential::get_credential(&key) {
            Ok(docker_credential::DockerCredential::UsernamePassword(user, password)) => {
                return Credentials::Given { user, password };
            }
            Ok(docker_credential::DockerCredential::IdentityToken(_)) => {
                tracing::debug!(
                    registry = host,
                    "Docker config holds an identity token, which berth cannot use; trying anonymous"
                );
            }
            Err(e) => tracing::trace!(registry = host, key, error = %e, "no Docker credential"),
        }
    }
    Credentials::Anonymous
}

/// `SOURCE_DATE_EPOCH`, the reproducible-builds timestamp, when set: the `created` time of
/// artifacts (without `--created`) and of signature bundles.
pub fn source_date_epoch() -> Option<String> {
    std::env::var(berth::artifact::ENV_SOURCE_DATE_EPOCH).ok()
}

/// Print a JSON value on stdout.
pub fn print_json(value: &serde_json::Value) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(|e| {
        Failure::new(
            Exit::Generic,
            format!("cannot render JSON: {e}"),
            "this is a bug in berth",
        )
    })?;
    println!("{text}");
    Ok(())
}

/// Blobs smaller than this upload too fast for a progress bar to help.
const PROGRESS_MIN_BYTES: u64 = 4 * 1024 * 1024;

/// A progress bar on stderr for `total` bytes, only when stderr is a terminal (silent in CI).
pub fn progress_bar(
    global: &Global,
    total: u64,
    what: &str,
) -> Option<(indicatif::ProgressBar, berth::registry::Progress)> {
    if total < PROGRESS_MIN_BYTES || !std::io::stderr().is_terminal() || global.json() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    let handle = bar.clone();
    Some((
        bar,
        std::sync::Arc::new(move |sent| handle.set_position(sent)),
    ))
}
