//! The `berth-agent` binary: runs in the cluster and keeps it in step with signed artifacts
//! (`run`), or does one reconcile from a workstation (`apply`, `diff`), or prints its CRD.
//!
//! Exit codes: see [`Exit`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use berth::reference::Reference;
use berth::registry::{Credentials, Registry, RegistryOptions};
use berth::signature::{PublicKey, TrustPolicy};
use berth_agent::discovery::ApiDiscovery;
use berth_agent::engine::{self, Change, Clients, SyncError, SyncOptions};
use berth_agent::fetch::{self, FetchError, Trust};
use berth_agent::health::HealthRules;
use berth_agent::inventory::{ApplySetParent, ParentKind};
use berth_agent::plan::{Manifest, NamespaceDefaults};
use berth_agent::{apply, controller, duration, lockdown, source};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Keep a Kubernetes cluster in step with signed berth artifacts in an OCI registry.
#[derive(Debug, Parser)]
#[command(name = "berth-agent", version, about)]
struct Cli {
    /// Log format: human text on a terminal, JSON otherwise (for log collectors).
    #[arg(long, value_enum, default_value = "auto", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Auto,
    Json,
    Text,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the Source CustomResourceDefinition (YAML) generated from the agent's types.
    Crd,
    /// Apply one artifact (or a directory) once: the same engine the controller runs.
    Apply(ApplyArgs),
    /// Show what `apply` would change, per object, without changing anything.
    Diff(ApplyArgs),
    /// Run the controller: reconcile every Source in the cluster until stopped.
    Run(RunArgs),
}

#[derive(Debug, Args)]
struct ApplyArgs {
    /// Artifact to apply: oci://host/repo@sha256:… (or :tag). Omit with --dir.
    #[arg(required_unless_present = "dir", conflicts_with = "dir")]
    reference: Option<String>,
    /// Apply the manifests of a local directory instead of an artifact (no signature).
    #[arg(long, value_name = "PATH")]
    dir: Option<PathBuf>,
    /// Trusted public key (cosign PEM); repeat for several. Required for oci:// unless
    /// --insecure-skip-verify.
    #[arg(long = "key", value_name = "FILE")]
    keys: Vec<PathBuf>,
    /// Apply without verifying the signature.
    #[arg(long)]
    insecure_skip_verify: bool,
    /// Follow the highest tag matching this semver range instead of the reference's tag.
    #[arg(long, value_name = "RANGE")]
    semver: Option<String>,
    /// Delete objects of the set that are no longer in the artifact.
    #[arg(long)]
    prune: bool,
    /// Wait until every applied object is healthy (kstatus rules).
    #[arg(long)]
    wait: bool,
    /// Health rules in CEL for kinds, a YAML list in the shape of a Source's
    /// spec.healthCheckExprs ({apiVersion, kind, current, failed?, inProgress?}); for objects
    /// of those kinds the rules decide instead of the built-in ones.
    #[arg(long, value_name = "FILE", requires = "wait")]
    health_check: Option<PathBuf>,
    /// ApplySet name: the Secret that records the set (default: derived from the
    /// repository or directory name). kubectl sees it as `--applyset=<name>`.
    #[arg(long)]
    name: Option<String>,
    /// Namespace of the ApplySet Secret; also where namespaced objects without a
    /// namespace go (default: the kubeconfig's namespace).
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Namespace for namespaced objects that do not name one (overrides --namespace for them).
    #[arg(long)]
    target_namespace: Option<String>,
    /// Take over fields owned by other field managers.
    #[arg(long)]
    force: bool,
    /// Delete and re-create objects whose immutable fields changed (a Job's pod template, a
    /// Deployment's selector) instead of refusing the change.
    #[arg(long)]
    recreate: bool,
    /// Deadline for apply and for health checks, e.g. 90s, 5m.
    #[arg(long, default_value = source::DEFAULT_TIMEOUT)]
    timeout: String,
    /// Apply as this ServiceAccount (of --namespace), by impersonation.
    #[arg(long, value_name = "NAME")]
    service_account: Option<String>,
    /// Accept an artifact without objects (with --prune it deletes the whole set).
    #[arg(long)]
    allow_empty: bool,
    /// Reach the registry over plain HTTP.
    #[arg(long)]
    insecure: bool,
    /// Extra CA certificates (PEM) for the registry's TLS.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Only watch Sources in this namespace (default: all namespaces).
    #[arg(long)]
    watch_namespace: Option<String>,
    /// Run several replicas: only the holder of a coordination.k8s.io Lease reconciles.
    #[arg(long)]
    leader_elect: bool,
    /// Name of the Lease replicas compete for.
    #[arg(long, default_value = "berth-agent", requires = "leader_elect")]
    lease_name: String,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else the kubeconfig's namespace).
    #[arg(long, requires = "leader_elect")]
    lease_namespace: Option<String>,
    /// How long a Lease stays valid without renewal; a follower takes over within this time
    /// after the leader dies, e.g. 15s.
    #[arg(long, default_value = "15s", requires = "leader_elect")]
    lease_duration: String,
    /// This replica's name in the Lease (default: $POD_NAME, else hostname-pid).
    #[arg(long, requires = "leader_elect")]
    identity: Option<String>,
    /// Serve /metrics (Prometheus), /healthz and /readyz on this address, e.g. 0.0.0.0:8080
    /// in a cluster; port 0 picks a free port (logged). Off when not given.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// After SIGTERM, how long reconciles in flight may finish before they are abandoned
    /// (keep it below the pod's terminationGracePeriodSeconds), e.g. 20s.
    #[arg(long, default_value = "20s")]
    shutdown_grace: String,
    /// Accept push notifications (distribution registry envelope on /hook/registry, or
    /// POST /hook/sources/NAMESPACE/NAME) on this address and reconcile at once.
    #[arg(long, value_name = "ADDR", requires = "receiver_secret")]
    receiver_addr: Option<std::net::SocketAddr>,
    /// Secret (NAMESPACE/NAME) with the receiver's `token` (Bearer) and/or `hmac-key`.
    #[arg(long, value_name = "NAMESPACE/NAME", requires = "receiver_addr")]
    receiver_secret: Option<String>,
    /// Tenant lockdown: refuse Sources without spec.serviceAccountName (no applying with the
    /// agent's own rights), unless --default-service-account names one.
    #[arg(long)]
    enforce_impersonation: bool,
    /// ServiceAccount (of the Source's namespace) to impersonate for Sources that name none.
    #[arg(long, value_name = "NAME")]
    default_service_account: Option<String>,
    /// Kinds no artifact may contain, comma-separated, as Kind or Kind.group
    /// (e.g. ClusterRoleBinding.rbac.authorization.k8s.io). The whole artifact is refused.
    #[arg(long, value_delimiter = ',', value_name = "KINDS")]
    deny_kinds: Vec<String>,
    /// Only these kinds may be applied (Kind or Kind.group, comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "KINDS")]
    allow_kinds: Vec<String>,
    /// Namespaces no object may be applied to (names or prefixes ending in *).
    #[arg(long, value_delimiter = ',', value_name = "NAMESPACES")]
    deny_namespaces: Vec<String>,
    /// Only these namespaces may receive objects (names or prefixes ending in *).
    #[arg(long, value_delimiter = ',', value_name = "NAMESPACES")]
    allow_namespaces: Vec<String>,
    /// Namespaced objects only in their Source's own namespace; no Namespace objects.
    #[arg(long)]
    source_namespace_only: bool,
    /// Cluster-scoped kinds an artifact may contain although a namespace rule is set
    /// (--source-namespace-only, --allow-namespaces, --deny-namespaces), as Kind or Kind.group,
    /// comma-separated (e.g. CustomResourceDefinition.apiextensions.k8s.io). Default: none;
    /// under a namespace rule every other cluster-scoped object refuses the whole artifact.
    #[arg(long, value_delimiter = ',', value_name = "KINDS")]
    allow_cluster_kinds: Vec<String>,
    /// Artifacts may contain Source objects (Source.berth.dev), the applying Source itself
    /// included. Default: refused whenever any lockdown flag is set.
    #[arg(long)]
    allow_sources: bool,
    /// The container's memory limit (bytes, or a quantity such as 256Mi or 1Gi). Half of it
    /// is the budget that artifacts being pulled, unpacked and kept for drift checks share;
    /// one artifact may use half of that. The Deployment sets it from its own limit.
    #[arg(long, env = "BERTH_MEMORY_LIMIT", value_name = "BYTES", default_value = "256Mi", value_parser = parse_memory)]
    memory_limit: u64,
}

/// A memory quantity as Kubernetes writes it: bytes, or a number with a binary (Ki, Mi, Gi,
/// Ti) or decimal (k, M, G, T) suffix.
fn parse_memory(s: &str) -> Result<u64, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{s}' is not a memory quantity such as 256Mi"))?;
    let factor: u64 = match suffix {
        "" => 1,
        "k" => 1000,
        "M" => 1000_u64.pow(2),
        "G" => 1000_u64.pow(3),
        "T" => 1000_u64.pow(4),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => {
            return Err(format!(
                "'{s}': unknown suffix '{suffix}' (use Ki, Mi, Gi, Ti, k, M, G or T)"
            ));
        }
    };
    let bytes = number
        .checked_mul(factor)
        .ok_or_else(|| format!("'{s}' is too large"))?;
    if bytes < 16 << 20 {
        return Err(format!(
            "'{s}' is less than the 16Mi the agent needs to run"
        ));
    }
    Ok(bytes)
}

/// The exit codes of `berth-agent`, documented in its README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// Success; for `diff`: no differences.
    Success = 0,
    /// Any error; for `diff`: differences found, as `kubectl diff`.
    Error = 1,
    /// Bad flags or arguments.
    Usage = 2,
    /// The artifact failed verification.
    Unverified = 3,
    /// The API server rejected objects (dry-run, conflicts, RBAC, another set's objects).
    Rejected = 4,
    /// Objects did not become healthy in time.
    Unhealthy = 5,
    /// `diff` failed (it could not tell whether anything differs).
    DiffFailed = 6,
}

impl Exit {
    /// `diff`'s answer when it worked: differences or none.
    fn differences(found: bool) -> Exit {
        if found { Exit::Error } else { Exit::Success }
    }
}

/// A failure with the exit code and the hint the user sees.
struct Failure {
    code: Exit,
    message: String,
    hint: Option<&'static str>,
}

impl Failure {
    fn new(code: Exit, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
            hint: None,
        }
    }
    fn hint(mut self, hint: &'static str) -> Self {
        self.hint = Some(hint);
        self
    }
}

impl From<FetchError> for Failure {
    fn from(e: FetchError) -> Self {
        let code = if matches!(e, FetchError::Untrusted { .. }) {
            Exit::Unverified
        } else {
            Exit::Error
        };
        Failure::new(code, e.to_string())
    }
}

impl From<SyncError> for Failure {
    fn from(e: SyncError) -> Self {
        let code = match &e {
            // Not a rejection: the API server never answered.
            e if e.unreachable() => Exit::Error,
            SyncError::Apply(_)
            | SyncError::Ownership(berth_agent::ownership::OwnershipError::Claimed { .. }) => {
                Exit::Rejected
            }
            SyncError::Health(_) => Exit::Unhealthy,
            _ => Exit::Error,
        };
        Failure::new(code, e.to_string())
    }
}

/// A failed sync; when the API server stopped answering (in any stage) the message names it.
fn sync_failure(e: SyncError, server: &impl std::fmt::Display) -> Failure {
    let unreachable = e.unreachable();
    let mut failure = Failure::from(e);
    if unreachable {
        failure.message = format!("lost the API server {server}: {}", failure.message);
    }
    failure
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // rustls needs its crypto provider chosen explicitly: ring, the only one linked. An error
    // only means one was installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::Error as u8);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => ExitCode::from(code as u8),
        Err(f) => {
            eprintln!("error: {}", f.message);
            if let Some(h) = f.hint {
                eprintln!("hint: {h}");
            }
            ExitCode::from(f.code as u8)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,kube=warn,kube_client=off,tower=warn,hyper=warn")
    });
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().with_current_span(true).init();
    } else {
        builder.init();
    }
}

async fn run(command: Command) -> Result<Exit, Failure> {
    match command {
        Command::Crd => {
            let yaml = source::crd_yaml()
                .map_err(|e| Failure::new(Exit::Error, format!("cannot render the CRD: {e}")))?;
            print!("{yaml}");
            Ok(Exit::Success)
        }
        Command::Apply(args) => one_shot(args, false).await,
        Command::Diff(args) => one_shot(args, true).await,
        Command::Run(args) => {
            let lease_duration = duration::parse(&args.lease_duration)
                .map_err(|e| Failure::new(Exit::Usage, format!("--lease-duration: {e}")))?;
            let shutdown_grace = duration::parse(&args.shutdown_grace)
                .map_err(|e| Failure::new(Exit::Usage, format!("--shutdown-grace: {e}")))?;
            let election = args.leader_elect.then(|| controller::LeaseOptions {
                name: args.lease_name.clone(),
                namespace: args.lease_namespace.clone(),
                duration: lease_duration,
                identity: args.identity.clone(),
            });
            let receiver = match (args.receiver_addr, &args.receiver_secret) {
                (Some(addr), Some(secret)) => Some(
                    berth_agent::receiver::ReceiverConfig::new(
                        addr,
                        secret,
                        args.watch_namespace.clone(),
                    )
                    .map_err(|e| Failure::new(Exit::Usage, e.to_string()))?,
                ),
                _ => None,
            };
            let lockdown =
                lockdown_of(&args).map_err(|e| Failure::new(Exit::Usage, e.to_string()))?;
            let opts = controller::RunOptions {
                watch_namespace: args.watch_namespace,
                election,
                metrics_addr: args.metrics_addr,
                shutdown_grace,
                receiver,
                lockdown,
                memory_limit: args.memory_limit,
            };
            controller::run(opts)
                .await
                .map_err(|e| Failure::new(Exit::Error, e.to_string()))?;
            Ok(Exit::Success)
        }
    }
}

/// The tenant lockdown rules from `run`'s flags.
fn lockdown_of(args: &RunArgs) -> Result<lockdown::Lockdown, lockdown::LockdownError> {
    let kinds = |flag: &'static str,
                 v: &[String]|
     -> Result<Vec<lockdown::KindRule>, lockdown::LockdownError> {
        v.iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| lockdown::KindRule::parse(flag, s))
            .collect()
    };
    let namespaces = |flag: &'static str,
                      v: &[String]|
     -> Result<Vec<lockdown::NamespaceRule>, lockdown::LockdownError> {
        v.iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| lockdown::NamespaceRule::parse(flag, s))
            .collect()
    };
    Ok(lockdown::Lockdown {
        enforce_impersonation: args.enforce_impersonation,
        default_service_account: args.default_service_account.clone(),
        allow_kinds: kinds("--allow-kinds", &args.allow_kinds)?,
        deny_kinds: kinds("--deny-kinds", &args.deny_kinds)?,
        allow_namespaces: namespaces("--allow-namespaces", &args.allow_namespaces)?,
        deny_namespaces: namespaces("--deny-namespaces", &args.deny_namespaces)?,
        source_namespace_only: args.source_namespace_only,
        allow_cluster_kinds: kinds("--allow-cluster-kinds", &args.allow_cluster_kinds)?,
        allow_sources: args.allow_sources,
    })
}

/// Derived ApplySet names stay well under the 253-character object name limit and readable.
const MAX_DERIVED_NAME_LEN: usize = 63;

/// A Kubernetes object name made from free text: lowercase alphanumerics and dashes.
fn object_name(text: &str) -> String {
    let mut s: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.truncate(MAX_DERIVED_NAME_LEN);
    let s = s.trim_matches('-').to_string();
    if s.is_empty() { "berth".to_string() } else { s }
}

/// The rules of a `--health-check` file, compiled.
fn health_rules(file: Option<&std::path::Path>) -> Result<HealthRules, Failure> {
    let Some(file) = file else {
        return Ok(HealthRules::default());
    };
    let usage = |what: String| {
        Failure::new(
            Exit::Usage,
            format!("--health-check {}: {what}", file.display()),
        )
    };
    let text = std::fs::read_to_string(file).map_err(|e| usage(format!("cannot read it: {e}")))?;
    let exprs: Vec<source::HealthCheckExpr> = serde_saphyr::from_str(&text).map_err(|e| {
        usage(format!(
            "not a YAML list of {{apiVersion, kind, current, failed?, inProgress?}}: {e}"
        ))
    })?;
    HealthRules::compile(exprs.iter().map(source::HealthCheckExpr::text))
        .map_err(|e| usage(e.to_string()))
}

async fn one_shot(args: ApplyArgs, diff_only: bool) -> Result<Exit, Failure> {
    let timeout = duration::parse(&args.timeout)
        .map_err(|e| Failure::new(Exit::Usage, format!("--timeout: {e}")))?;
    // Before anything is read or applied: a rule that does not compile is a usage error.
    let health = health_rules(args.health_check.as_deref())?;
    let config = kube::Config::infer().await.map_err(|e| {
        Failure::new(Exit::Error, format!("no usable kubeconfig: {e}"))
            .hint("set KUBECONFIG or run inside a cluster")
    })?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let agent = kube::Client::try_from(config.clone()).map_err(|e| {
        Failure::new(
            Exit::Error,
            format!("cannot build the Kubernetes client: {e}"),
        )
    })?;
    let applier = match &args.service_account {
        Some(sa) => apply::impersonating(&config, &namespace, sa).map_err(|e| {
            Failure::new(
                Exit::Error,
                format!("cannot build the impersonating client: {e}"),
            )
        })?,
        None => agent.clone(),
    };
    let clients = Clients {
        agent: agent.clone(),
        applier,
    };

    let (manifests, what, default_name): (Vec<Manifest>, String, String) = match (
        &args.dir,
        &args.reference,
    ) {
        (Some(dir), _) => {
            let m = fetch::read_dir(dir).map_err(|e| Failure::new(Exit::Error, e.to_string()))?;
            let base = dir
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "berth".into());
            (m, dir.display().to_string(), base)
        }
        (None, Some(r)) => {
            let reference: Reference = r
                .parse()
                .map_err(|e| Failure::new(Exit::Usage, format!("{e}")))?;
            let trust = if args.insecure_skip_verify {
                Trust::SkipVerify
            } else if args.keys.is_empty() {
                return Err(Failure::new(
                    Exit::Usage,
                    "no trust policy: pass --key cosign.pub (or --insecure-skip-verify to apply unsigned content)",
                ));
            } else {
                let mut keys = Vec::new();
                for k in &args.keys {
                    keys.push(
                        PublicKey::load(k)
                            .map_err(|e| Failure::new(Exit::Usage, format!("{e}")))?,
                    );
                }
                Trust::Keys(TrustPolicy::new(keys))
            };
            // One-shot mode takes no credentials, and the agent never reads ambient ones.
            let credentials = Credentials::Anonymous;
            let options = RegistryOptions {
                credentials,
                ca_file: args.ca_file.clone(),
                insecure: args.insecure,
            };
            let registry = Registry::for_reference(&reference, &options)
                .map_err(|e| Failure::new(Exit::Error, e.to_string()).hint(e.hint()))?;
            let share = berth_agent::budget::MemoryBudget::for_limit(
                berth_agent::budget::DEFAULT_MEMORY_LIMIT,
            )
            .share();
            let fetched =
                fetch::fetch(&registry, &reference, args.semver.as_deref(), &trust, share).await?;
            tracing::info!(digest = %fetched.digest, signer = %fetched.signer, objects = fetched.manifests.len(), "artifact verified");
            let base = reference
                .repository()
                .rsplit('/')
                .next()
                .unwrap_or("berth")
                .to_string();
            let at = reference.with_digest(fetched.digest.clone()).to_string();
            eprintln!("artifact {at} ({})", fetched.signer);
            (fetched.manifests, at, base)
        }
        (None, None) => {
            return Err(Failure::new(
                Exit::Usage,
                "give an oci:// reference or --dir PATH",
            ));
        }
    };

    let parent = ApplySetParent {
        kind: ParentKind::Secret,
        name: args
            .name
            .clone()
            .unwrap_or_else(|| object_name(&default_name)),
        namespace: namespace.clone(),
    };
    let opts = SyncOptions {
        namespaces: NamespaceDefaults {
            target: args.target_namespace.clone(),
            fallback: namespace,
        },
        force: args.force,
        recreate: args.recreate,
        prune: args.prune,
        wait: args.wait,
        timeout,
        allow_empty: args.allow_empty,
        dry_run_gate: true,
        health,
    };
    let mut discovery = ApiDiscovery::new(agent);
    if diff_only {
        let changes = engine::diff(&clients, &mut discovery, &parent, manifests, &opts)
            .await
            .map_err(|e| Failure {
                code: Exit::DiffFailed,
                ..sync_failure(e, &config.cluster_url)
            })?;
        let mut differs = false;
        for (key, change) in &changes {
            match change {
                Change::Unchanged => {}
                Change::Create => println!("+ {key} (create)"),
                Change::Prune => println!("- {key} (prune)"),
                Change::Update(fields) => {
                    println!("~ {key} (update)");
                    for f in fields {
                        println!("    {f}");
                    }
                }
                Change::Recreate(fields) => {
                    println!("! {key} (delete and re-create: an immutable field changed)");
                    for f in fields {
                        println!("    {f}");
                    }
                }
                Change::Skip(why) => println!("= {key} ({why})"),
            }
            differs |= !matches!(change, Change::Unchanged | Change::Skip(_));
        }
        let unchanged = changes
            .iter()
            .filter(|(_, c)| matches!(c, Change::Unchanged | Change::Skip(_)))
            .count();
        eprintln!(
            "{what}: {} object(s) differ, {unchanged} unchanged",
            changes.len() - unchanged
        );
        return Ok(Exit::differences(differs));
    }
    let report = engine::sync(&clients, &mut discovery, &parent, manifests, &opts)
        .await
        .map_err(|e| sync_failure(e, &config.cluster_url))?;
    for k in &report.changed {
        println!("applied {k}");
    }
    for k in &report.recreated {
        println!("re-created {k} (an immutable field changed)");
    }
    for (k, why) in &report.skipped {
        println!("skipped {k}: {why}");
    }
    for k in &report.pruned {
        match report.terminating.iter().find(|(t, _)| t == k) {
            Some((_, finalizers)) => println!(
                "pruned {k} (still terminating: waiting on finalizers {})",
                finalizers.join(", ")
            ),
            None => println!("pruned {k}"),
        }
    }
    eprintln!(
        "{what}: {} object(s), {} changed, {} unchanged, {} pruned (ApplySet {parent}, id {})",
        report.total,
        report.changed.len(),
        report.total - report.changed.len(),
        report.pruned.len(),
        parent.id()
    );
    Ok(Exit::Success)
}
