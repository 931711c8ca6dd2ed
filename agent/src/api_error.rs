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
        kube::Error::Api(s) => s.message.clone(),
        e if is_unreachable(e) => format!("API server unreachable ({})", causes(e)),
        other => other.to_string(),
    }
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
