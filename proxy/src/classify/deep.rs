//! Fallback for text PostgreSQL's parser accepts but whose tree is nested too deeply for
//! pg_query's protobuf decoder (prost stops at 100 levels: about 45 chained operators such
//! as `a || b || ...`, or 25 nested subqueries).
//!
//! Without a tree, a string is read-only only if every statement node in it is a SELECT
//! (pg_query's C-side summary walks the whole raw tree), its tokens contain no locking
//! clause, `INTO`, `INSERT`, `UPDATE`, `DELETE` or `MERGE` (over-approximations: a column
//! named `update` is enough to go to the primary), and no function it calls writes.

use pg_query::protobuf::summary_result::Context;
use pg_query::protobuf::Token;
use pg_query::ParserOptions;

use super::analyze::{recheck, sort_dedup, Analysis};
use super::policy::{builtin_writer, FuncName};
use super::types::{Access, AccessReason, Classification, ParsedKind};

/// Analyses `sql` without its parse tree.
pub(super) fn analyze(sql: &str, options: ParserOptions) -> Analysis {
    // The token scan below follows the default settings only.
    if options != ParserOptions::DEFAULT {
        return too_complex();
    }
    let (Ok(summary), Ok(scan)) = (pg_query::summary(sql, options, -1), pg_query::scan(sql)) else {
        return too_complex();
    };
    let statements = pg_query::split_with_parser(sql).map_or(1, |s| s.len());
    let mut tables = Vec::new();
    for table in &summary.tables {
        if !table.schema_name.is_empty() {
            tables.push(format!("{}.{}", table.schema_name, table.table_name));
        }
        tables.push(table.table_name.clone());
    }
    sort_dedup(&mut tables);
    let calls: Vec<FuncName> = summary
        .functions
        .iter()
        .filter(|f| f.context == Context::Call)
        .map(|f| FuncName {
            schema: f.schema_name.clone().map(String::into_boxed_str),
            name: f.function_name.clone().into_boxed_str(),
        })
        .collect();
    let mut functions: Vec<String> = calls.iter().map(FuncName::display).collect();
    sort_dedup(&mut functions);
    let only_selects = !summary.statement_types.is_empty()
        && summary.statement_types.iter().all(|t| t == "SelectStmt");
    let reason = if !only_selects {
        Some(AccessReason::TooComplex)
    } else if calls.iter().any(builtin_writer) {
        Some(AccessReason::WriteFunction)
    } else {
        token_reason(&scan.tokens)
    };
    let (access, reason, recheck) = match reason {
        Some(reason) => (Access::Write, reason, None),
        None => (
            Access::ReadOnly,
            AccessReason::ReadOnly,
            recheck(calls, AccessReason::ReadOnly),
        ),
    };
    let base = Classification {
        access,
        reason,
        kind: ParsedKind::Select,
        tables,
        functions,
        statements,
        session_plain: false,
    };
    Analysis { base, recheck }
}

/// Why the tokens of a SELECT-only string suggest it writes, if they do.
fn token_reason(tokens: &[pg_query::protobuf::ScanToken]) -> Option<AccessReason> {
    let mut previous = Token::Nul;
    for scanned in tokens {
        let token = Token::try_from(scanned.token).unwrap_or(Token::Nul);
        let reason = match (previous, token) {
            (Token::For, Token::Update | Token::Share | Token::No | Token::Key) => {
                Some(AccessReason::LockingRead)
            }
            (_, Token::Into) => Some(AccessReason::SelectInto),
            (Token::Key, Token::Update) => Some(AccessReason::LockingRead),
            (_, Token::Insert | Token::Update | Token::DeleteP | Token::Merge) => {
                Some(AccessReason::WritingCte)
            }
            _ => None,
        };
        if reason.is_some() {
            return reason;
        }
        previous = token;
    }
    None
}

fn too_complex() -> Analysis {
    Analysis {
        base: Classification::unparseable(AccessReason::TooComplex),
        recheck: None,
    }
}
