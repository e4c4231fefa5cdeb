//! The shutdown signal: SIGINT or SIGTERM starts a drain.

/// Completes on the first SIGINT (Ctrl-C) or SIGTERM.
pub async fn signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "Cannot listen for SIGINT.");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "Cannot listen for SIGTERM.");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received; draining."),
        () = terminate => tracing::info!("SIGTERM received; draining."),
    }
}

/// Runs `drain` under `deadline`, warning if it is exceeded.
pub async fn with_deadline<F: std::future::Future>(
    what: &'static str,
    deadline: std::time::Duration,
    drain: F,
) -> Option<F::Output> {
    match tokio::time::timeout(deadline, drain).await {
        Ok(output) => Some(output),
        Err(_) => {
            tracing::warn!(what, deadline = ?deadline, "Drain deadline exceeded; stopping anyway.");
            None
        }
    }
}
