//! The admin console's commands, parsed from one simple-query string (pure, no I/O):
//! PgBouncer's spelling, case-insensitive, with an optional trailing semicolon.

/// What `SHOW` can list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Pools,
    Clients,
    Servers,
    Nodes,
    Stats,
    NodeStats,
    Config,
    Help,
}

/// One console command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Show(Show),
    Pause,
    Resume,
    Reload,
    /// An empty query string (`;` or blanks): EmptyQueryResponse, as PostgreSQL answers.
    Empty,
}

/// A query that is not a console command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// `SHOW` of something the console does not list.
    #[error("unknown SHOW item {0:?}")]
    UnknownShow(String),
    /// Anything else: SQL, or a PgBouncer command Causeway does not have.
    #[error("not a console command: {0:?}")]
    NotACommand(String),
    /// More than one statement in one query string.
    #[error("the console runs one command per query")]
    Several,
}

/// Every command, for `SHOW HELP` and error hints.
pub const COMMANDS: &[&str] = &[
    "SHOW HELP",
    "SHOW POOLS",
    "SHOW CLIENTS",
    "SHOW SERVERS",
    "SHOW NODES",
    "SHOW STATS",
    "SHOW NODE_STATS",
    "SHOW CONFIG",
    "PAUSE",
    "RESUME",
    "RELOAD",
];

/// Longest command text echoed back in an error.
const ECHO_MAX: usize = 60;

/// Parses one query string.
pub fn parse(query: &str) -> Result<Command, CommandError> {
    let mut text = query.trim();
    while let Some(rest) = text.strip_suffix(';') {
        text = rest.trim_end();
    }
    if text.contains(';') {
        return Err(CommandError::Several);
    }
    let words: Vec<String> = text
        .split_ascii_whitespace()
        .map(|w| w.to_ascii_uppercase())
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let command = match words.as_slice() {
        [] => Command::Empty,
        ["SHOW", item] => Command::Show(show(item)?),
        ["PAUSE"] => Command::Pause,
        ["RESUME"] => Command::Resume,
        ["RELOAD"] => Command::Reload,
        _ => return Err(CommandError::NotACommand(echo(text))),
    };
    Ok(command)
}

fn show(item: &str) -> Result<Show, CommandError> {
    Ok(match item {
        "POOLS" => Show::Pools,
        "CLIENTS" => Show::Clients,
        "SERVERS" => Show::Servers,
        "NODES" => Show::Nodes,
        "STATS" => Show::Stats,
        "NODE_STATS" => Show::NodeStats,
        "CONFIG" => Show::Config,
        "HELP" => Show::Help,
        other => return Err(CommandError::UnknownShow(echo(other))),
    })
}

/// The start of `text`, cut at a character boundary.
fn echo(text: &str) -> String {
    match text.char_indices().nth(ECHO_MAX) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_in_any_case_with_semicolons_and_blanks() {
        assert_eq!(parse("SHOW POOLS"), Ok(Command::Show(Show::Pools)));
        assert_eq!(
            parse("  show   clients ;"),
            Ok(Command::Show(Show::Clients))
        );
        assert_eq!(parse("Show Servers;;"), Ok(Command::Show(Show::Servers)));
        assert_eq!(parse("show nodes"), Ok(Command::Show(Show::Nodes)));
        assert_eq!(parse("SHOW STATS"), Ok(Command::Show(Show::Stats)));
        assert_eq!(
            parse("show node_stats;"),
            Ok(Command::Show(Show::NodeStats))
        );
        assert_eq!(parse("show config"), Ok(Command::Show(Show::Config)));
        assert_eq!(parse("SHOW HELP"), Ok(Command::Show(Show::Help)));
        assert_eq!(parse("pause;"), Ok(Command::Pause));
        assert_eq!(parse("RESUME"), Ok(Command::Resume));
        assert_eq!(parse("reload\n"), Ok(Command::Reload));
        assert_eq!(parse(" ; "), Ok(Command::Empty));
        assert_eq!(parse(""), Ok(Command::Empty));
    }

    #[test]
    fn anything_else_is_refused_with_what_it_was() {
        assert_eq!(
            parse("SHOW DATABASES"),
            Err(CommandError::UnknownShow("DATABASES".into()))
        );
        assert_eq!(
            parse("SELECT 1"),
            Err(CommandError::NotACommand("SELECT 1".into()))
        );
        assert_eq!(
            parse("SHOW POOLS; SHOW CLIENTS"),
            Err(CommandError::Several)
        );
        assert_eq!(
            parse("PAUSE mydb"),
            Err(CommandError::NotACommand("PAUSE mydb".into()))
        );
        let long = "é".repeat(200);
        let Err(CommandError::NotACommand(echoed)) = parse(&long) else {
            panic!("long text parsed");
        };
        assert_eq!(echoed.chars().count(), ECHO_MAX + 3);
    }

    #[test]
    fn the_help_lists_every_command_that_parses() {
        for command in COMMANDS {
            assert!(parse(command).is_ok(), "{command}");
        }
    }
}
