//! The command line: no arguments runs the server; `token create` makes an
//! API token and prints the `API_TOKENS` entry that admits it; `openapi`
//! prints the API's OpenAPI document.

use std::ffi::OsString;
use std::process::ExitCode;

use crate::tokens::{self, Scope, TokenEntry};

pub const USAGE: &str = "\
usage:
  pgcluster-api                                   run the server (settings from .env and the environment)
  pgcluster-api token create --name NAME --scope read|plan|apply|admin
                                                  print a new token and its API_TOKENS entry
  pgcluster-api openapi                           print the OpenAPI 3.1 document (as GET /openapi.json)
  pgcluster-api --help                            this text";

/// What the binary was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Serve,
    Help,
    CreateToken { name: String, scope: Scope },
    OpenApi,
}

/// Reads the arguments after the program name. An error is a usage error (exit 2).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let args = args
        .into_iter()
        .map(|a| {
            a.into_string()
                .map_err(|a| format!("argument {a:?} is not UTF-8"))
        })
        .collect::<Result<Vec<String>, String>>()?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] => Ok(Command::Serve),
        ["-h" | "--help" | "help"] => Ok(Command::Help),
        ["token", "create", options @ ..] => create_options(options),
        ["openapi"] => Ok(Command::OpenApi),
        [other, ..] => Err(format!("unknown command {other:?}")),
    }
}

fn create_options(options: &[&str]) -> Result<Command, String> {
    let mut name = None;
    let mut scope = None;
    let mut rest = options.iter();
    while let Some(option) = rest.next() {
        let (key, inline) = match option.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (*option, None),
        };
        let slot = match key {
            "--name" => &mut name,
            "--scope" => &mut scope,
            _ => return Err(format!("token create: unknown option {option:?}")),
        };
        let value = match inline {
            Some(value) => value,
            None => rest
                .next()
                .copied()
                .ok_or_else(|| format!("token create: {key} needs a value"))?,
        };
        if slot.replace(value.to_string()).is_some() {
            return Err(format!("token create: {key} given twice"));
        }
    }
    let name = name.ok_or("token create: --name is required")?;
    tokens::check_name(&name).map_err(|e| format!("token create: --name: {e}"))?;
    let scope = scope
        .ok_or("token create: --scope is required")?
        .parse()
        .map_err(|e| format!("token create: --scope: {e}"))?;
    Ok(Command::CreateToken { name, scope })
}

/// Runs a command other than `Serve`.
pub fn run(command: Command) -> ExitCode {
    match command {
        Command::Serve => unreachable!("main runs the server"),
        Command::Help => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::CreateToken { name, scope } => create_token(&name, scope),
        Command::OpenApi => {
            use std::io::Write;
            // A reader that stops early (`| head`) is no reason to panic.
            match writeln!(
                std::io::stdout().lock(),
                "{}",
                crate::routes::openapi_json()
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
    }
}

/// Prints the token (this is the only time it is shown) and its entry.
fn create_token(name: &str, scope: Scope) -> ExitCode {
    let token = match tokens::generate_token() {
        Ok(token) => token,
        Err(err) => {
            eprintln!("token create: no randomness from the operating system: {err}");
            return ExitCode::FAILURE;
        }
    };
    let entry = TokenEntry::for_token(name, scope, &token).config_entry();
    println!("token: {token}");
    println!("API_TOKENS entry: {entry}");
    eprintln!(
        "\nThe token is shown only this once: hand it to the client, which sends\n\
         \"Authorization: Bearer <token>\". Add the entry to API_TOKENS (comma-separated\n\
         with any others) and restart the server."
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn no_arguments_runs_the_server() {
        assert_eq!(parse_args(&[]), Ok(Command::Serve));
    }

    #[test]
    fn token_create_takes_a_name_and_a_scope() {
        let expected = Command::CreateToken {
            name: "ci".into(),
            scope: Scope::Apply,
        };
        assert_eq!(
            parse_args(&["token", "create", "--name", "ci", "--scope", "apply"]),
            Ok(expected)
        );
        assert_eq!(
            parse_args(&["token", "create", "--scope=apply", "--name=ci"]),
            Ok(Command::CreateToken {
                name: "ci".into(),
                scope: Scope::Apply
            })
        );
    }

    #[test]
    fn token_create_rejects_missing_or_bad_values() {
        for args in [
            &["token", "create", "--name", "ci"][..],
            &["token", "create", "--scope", "read"],
            &["token", "create", "--name", "ci", "--scope", "write"],
            &["token", "create", "--name", "c:i", "--scope", "read"],
            &["token", "create", "--name", "ci", "--scope"],
            &[
                "token", "create", "--name", "a", "--name", "b", "--scope", "read",
            ],
            &["token", "create", "--colour", "red"],
        ] {
            assert!(parse_args(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn openapi_prints_the_document() {
        assert_eq!(parse_args(&["openapi"]), Ok(Command::OpenApi));
        assert!(parse_args(&["openapi", "--yaml"]).is_err());
    }

    #[test]
    fn unknown_commands_are_usage_errors() {
        assert!(parse_args(&["serve", "now"]).is_err());
        assert!(parse_args(&["token"]).is_err());
        assert!(parse_args(&["--port", "80"]).is_err());
    }
}
