//! How a failed request to the API server reads to a user, the same in every stage (plan,
//! inventory, dry-run, apply, prune, health): the server's own sentence when it answered, or
//! that it could not be reached and why.

/// Whether the request got no answer at all: the connection to the API server failed or
/// broke (refused, reset, closed mid-request: the server is down or restarting). Nothing
/// about the request itself is wrong.
pub fn is_unreachable(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Service(_) | kube::Error::HyperError(_))
}

/// One line a user can act on: the API server's own message rather than the whole status
/// object, "API server unreachable (…)" with the transport's reason, else kube's message.
pub fn message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => readable(s),
        e if is_unreachable(e) => format!("API server unreachable ({})", causes(e)),
        other => other.to_string(),
    }
}

/// The message of a refusal with the API server's Go value dumps cut out: a validation error
/// prints the whole rejected value (`Invalid value: core.PodTemplateSpec{ObjectMeta:…}` runs
/// to kilobytes for one pod template), which buries the field and the reason.
pub fn readable(status: &kube::core::Status) -> String {
    without_value_dumps(&status.message)
}

/// The fields a refusal says cannot change (`field is immutable`), from the status causes or,
/// when the server gave none, from the message.
pub fn immutable_fields(status: &kube::core::Status) -> Vec<String> {
    if status.code != 422 {
        return Vec::new();
    }
    // Only a refusal whose every cause is an immutable field: re-creating an object that is
    // also invalid in another way would delete it and then fail to create it.
    let causes: Vec<(String, String)> = match status.details.as_ref() {
        Some(d) if !d.causes.is_empty() => d
            .causes
            .iter()
            .map(|c| (c.field.clone(), c.message.clone()))
            .collect(),
        _ => {
            // `<kind> "<name>" is invalid: [<field>: Invalid value: …: field is immutable, …]`
            let Some((_, rest)) = status.message.split_once(" is invalid: ") else {
                return Vec::new();
            };
            let rest = without_value_dumps(rest);
            rest.trim_start_matches('[')
                .trim_end_matches(']')
                .split(", ")
                .map(|part| match part.split_once(": ") {
                    Some((field, why)) => (field.to_string(), why.to_string()),
                    None => (String::new(), part.to_string()),
                })
                .collect()
        }
    };
    if causes.is_empty()
        || !causes
            .iter()
            .all(|(field, why)| !field.is_empty() && is_immutable_text(why))
    {
        return Vec::new();
    }
    causes.into_iter().map(|(field, _)| field).collect()
}

/// `field is immutable`, and the variants some kinds use (`… is immutable when …`).
fn is_immutable_text(s: &str) -> bool {
    s.contains("is immutable")
}

/// Marks where a dumped value was cut out.
const CUT: &str = "(value not shown)";

/// Replaces every Go composite literal after `Invalid value: ` (`pkg.Type{…}`, `map[…]…{…}`,
/// `[]…{…}`) with [`CUT`]; quoted strings and numbers are short and kept.
fn without_value_dumps(message: &str) -> String {
    const MARK: &str = "Invalid value: ";
    let mut out = String::with_capacity(message.len().min(1024));
    let mut rest = message;
    while let Some(at) = rest.find(MARK) {
        let (before, value) = rest.split_at(at + MARK.len());
        out.push_str(before);
        match dump_len(value) {
            Some(n) => {
                out.push_str(CUT);
                rest = &value[n..];
            }
            None => rest = value,
        }
    }
    out.push_str(rest);
    out
}

/// Length of a Go composite literal at the start of `s` (type name, then balanced braces, with
/// quoted strings skipped), or `None` when `s` does not start with one.
fn dump_len(s: &str) -> Option<usize> {
    let open = s.find('{')?;
    let type_name = &s[..open];
    let looks_like_type = !type_name.is_empty()
        && type_name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '*' | '[' | ']'));
    if !looks_like_type {
        return None;
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in s.char_indices().skip_while(|(i, _)| *i < open) {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    // Unbalanced (the server cut the message): everything after the type name is the dump.
    Some(s.len())
}

/// An error's causes on one line: the telling part ("Connection refused", "connection closed
/// before message completed") sits in the sources, not in kube's own wrapper message.
fn causes(e: &kube::Error) -> String {
    let mut parts = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

/// A client of an API server that died: nothing listens on its port, every connection is
/// refused.
#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests report failure by panicking
pub(crate) fn dead_server_client() -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    /// What kube-apiserver 1.36 answers for a Job whose pod template changed (value shortened).
    const JOB_TEMPLATE_CHANGED: &str = r#"Job.batch "migrate" is invalid: spec.template: Invalid value: core.PodTemplateSpec{ObjectMeta:v1.ObjectMeta{Name:"", Labels:map[string]string{"batch.kubernetes.io/job-name":"migrate", "x":"{"}}, Spec:core.PodSpec{Containers:[]core.Container{core.Container{Name:"m", Image:"busybox:2", Command:[]string{"sh", "-c", "echo \"}\""}}}}}: field is immutable"#;

    #[test]
    fn value_dumps_are_cut_and_the_field_and_reason_stay() {
        assert_eq!(
            without_value_dumps(JOB_TEMPLATE_CHANGED),
            "Job.batch \"migrate\" is invalid: spec.template: Invalid value: (value not shown): field is immutable"
        );
        let selector = r#"Deployment.apps "web" is invalid: [spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"app":"web2"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable, spec.template.metadata.labels: Invalid value: map[string]string{"app":"web"}: `selector` does not match template `labels`]"#;
        assert_eq!(
            without_value_dumps(selector),
            "Deployment.apps \"web\" is invalid: [spec.selector: Invalid value: (value not shown): field is immutable, spec.template.metadata.labels: Invalid value: (value not shown): `selector` does not match template `labels`]"
        );
        let short = r#"ConfigMap "c" is invalid: metadata.name: Invalid value: "C_": a lowercase RFC 1123 subdomain"#;
        assert_eq!(without_value_dumps(short), short, "short values are kept");
        assert_eq!(
            without_value_dumps("x: Invalid value: 3: must be positive"),
            "x: Invalid value: 3: must be positive"
        );
        assert_eq!(
            without_value_dumps("x: Invalid value: core.PodSpec{Containers:"),
            "x: Invalid value: (value not shown)",
            "a message the server cut short"
        );
    }

    #[test]
    fn immutable_fields_come_from_the_causes_or_the_message() {
        let mut s = Status::failure(JOB_TEMPLATE_CHANGED, "Invalid").with_code(422);
        assert_eq!(immutable_fields(&s), vec!["spec.template".to_string()]);
        s.details = Some(kube::core::response::StatusDetails {
            name: "migrate".into(),
            group: "batch".into(),
            kind: "Job".into(),
            uid: String::new(),
            causes: vec![kube::core::response::StatusCause {
                reason: "FieldValueInvalid".into(),
                message: "Invalid value: core.PodTemplateSpec{}: field is immutable".into(),
                field: "spec.template".into(),
            }],
            retry_after_seconds: 0,
        });
        assert_eq!(immutable_fields(&s), vec!["spec.template".to_string()]);
        let other = Status::failure(
            r#"ConfigMap "c" is invalid: metadata.name: Invalid value: "C_": a lowercase RFC 1123 subdomain"#,
            "Invalid",
        )
        .with_code(422);
        assert!(immutable_fields(&other).is_empty());
        let forbidden = Status::failure("x is immutable", "Forbidden").with_code(403);
        assert!(immutable_fields(&forbidden).is_empty());
        let also_invalid = Status::failure(
            r#"Deployment.apps "web" is invalid: [spec.selector: Invalid value: v1.LabelSelector{}: field is immutable, spec.template.metadata.labels: Invalid value: map[string]string{"app":"web"}: `selector` does not match template `labels`]"#,
            "Invalid",
        )
        .with_code(422);
        assert!(
            immutable_fields(&also_invalid).is_empty(),
            "an object that is invalid besides is never re-created"
        );
        let two = Status::failure(
            r#"Deployment.apps "web" is invalid: [spec.selector: Invalid value: v1.LabelSelector{}: field is immutable, spec.template: Invalid value: core.PodTemplateSpec{}: field is immutable]"#,
            "Invalid",
        )
        .with_code(422);
        assert_eq!(
            immutable_fields(&two),
            vec!["spec.selector", "spec.template"]
        );
    }

    #[test]
    fn the_servers_own_sentence_or_why_it_could_not_be_reached() {
        let refused = kube::Error::Api(
            Status::failure("configmaps \"x\" is forbidden", "Forbidden")
                .with_code(403)
                .boxed(),
        );
        assert!(!is_unreachable(&refused));
        assert_eq!(message(&refused), "configmaps \"x\" is forbidden");
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let down = kube::Error::Service(Box::new(io));
        assert!(is_unreachable(&down));
        assert_eq!(
            message(&down),
            "API server unreachable (Connection refused)"
        );
    }
}
