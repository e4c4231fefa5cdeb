//! A service binary's command line: nothing (serve), `healthcheck`, `--help` and `--version`.
//! Everything else a service takes comes from its environment ([`crate::config::settings`]).

use std::ffi::OsString;

/// What the command line asks of a service binary.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Serve until SIGTERM or Ctrl-C.
    Serve,
    /// Ask the running service's `/ready`.
    Healthcheck,
    /// Print this text and exit 0.
    Print(String),
}

/// Why a command line was refused: the message, which ends by pointing at `--help`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(String);

/// The version line: `gateway 0.1.0 (revision 1a2b3c4)`.
pub fn version(service: &str) -> String {
    format!(
        "{service} {} (revision {})",
        env!("CARGO_PKG_VERSION"),
        option_env!("PIPELINE_REVISION").unwrap_or("unknown")
    )
}

/// What the service is, in a line.
fn about(service: &str) -> &'static str {
    match service {
        "gateway" => {
            "The pipeline's HTTP front door: takes product updates, catalog entries, images and \
             orders, checks them and publishes them to RabbitMQ."
        }
        "processor" => {
            "Applies the accepted product updates and orders exactly once, in order per \
             product, to PostgreSQL and Redis, and emits the downstream events; sets aside what it \
             cannot apply as dead letters, and serves the operators' API to list, inspect, \
             replay and purge them."
        }
        "notifier" => "Delivers downstream events to subscribers as signed webhooks.",
        "imager" => "Makes each accepted image into its variants in the object store.",
        "dashboard" => "The operators' web dashboard: live numbers, dead letters, deliveries.",
        _ => "A service of the product event pipeline.",
    }
}

/// Further commands a service has, as `--help` lists them.
fn commands(service: &str) -> &'static str {
    match service {
        "gateway" => {
            "  gateway keys ...       manage API keys (gateway keys --help)\n  \
             gateway migrate        apply the migrations and set each service's PostgreSQL \
             role\n                         (gateway migrate --help)\n"
        }
        _ => "",
    }
}

/// The `--help` text of `service`.
pub fn help(service: &str) -> String {
    format!(
        "{version}\n{about}\n\n\
         Usage:\n  \
         {service:<22} serve until SIGTERM or Ctrl-C, configured by the settings below\n  \
         {healthcheck:<22} exit 0 when the running {service}'s /ready answers 200, 1 otherwise\n\
         {commands}  \
         {help:<22} this text\n  \
         {version_flag:<22} the version, and the revision it was built from\n\n\
         Settings (environment variables, read once at start; docs/configuration.md has them \
         all):\n{settings}",
        version = version(service),
        about = crate::config::settings::wrap(about(service), 96).join("\n"),
        healthcheck = format!("{service} healthcheck"),
        commands = commands(service),
        help = format!("{service} --help"),
        version_flag = format!("{service} --version"),
        settings = crate::config::settings::help(service),
    )
}

/// Reads the arguments after the binary's name.
pub fn parse(service: &str, args: impl IntoIterator<Item = OsString>) -> Result<Command, Refused> {
    let args: Vec<OsString> = args.into_iter().collect();
    let refuse = |what: String| {
        Refused(format!(
            "{what}; run `{service} --help` for the commands and settings"
        ))
    };
    let Some(first) = args.first() else {
        return Ok(Command::Serve);
    };
    let command = match first.to_str() {
        Some("healthcheck") => Command::Healthcheck,
        Some("--help" | "-h" | "help") => Command::Print(help(service)),
        Some("--version" | "-V") => Command::Print(version(service)),
        _ => return Err(refuse(format!("unknown command {first:?}"))),
    };
    match args.get(1) {
        None => Ok(command),
        Some(extra) => Err(refuse(format!("unexpected argument {extra:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> Result<Command, Refused> {
        parse("processor", args.iter().map(OsString::from))
    }

    #[test]
    fn unknown_or_extra_arguments_are_refused_pointing_at_help() {
        for args in [
            &["--frobnicate"][..],
            &["serve"],
            &["healthcheck", "now"],
            &["-x"],
        ] {
            let refused = parsed(args).expect_err("refused").to_string();
            assert!(
                refused.contains(&format!("{:?}", args[args.len() - 1])),
                "{refused}"
            );
            assert!(refused.ends_with("run `processor --help` for the commands and settings"));
        }
    }

    #[test]
    fn help_and_version_are_printed_without_serving() {
        assert_eq!(parsed(&[]), Ok(Command::Serve));
        assert_eq!(parsed(&["healthcheck"]), Ok(Command::Healthcheck));
        let Ok(Command::Print(version)) = parsed(&["--version"]) else {
            panic!("a version")
        };
        assert!(version.starts_with(&format!(
            "processor {} (revision ",
            env!("CARGO_PKG_VERSION")
        )));
        assert_eq!(parsed(&["-V"]), Ok(Command::Print(version)));
        let Ok(Command::Print(help)) = parsed(&["--help"]) else {
            panic!("a help text")
        };
        assert_eq!(parsed(&["-h"]), Ok(Command::Print(help.clone())));
        assert!(help.contains("processor healthcheck"), "{help}");
        assert!(
            help.contains("PROCESSOR_ADDR (default: 0.0.0.0:8082)"),
            "{help}"
        );
        assert!(
            help.contains("RETRY_DELAYS_MS (default: 1000,10000,60000)"),
            "{help}"
        );
        assert!(!help.contains("gateway keys"), "{help}");
        assert!(super::help("gateway").contains("gateway keys ..."));
    }
}
