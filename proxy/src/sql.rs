//! SQL scanning for the transaction pooler: a PostgreSQL-exact lexer and a statement
//! splitter/classifier that tracks session state (SET, PREPARE, LISTEN, ...). This is not a
//! parser; it reads only as much of each statement as session tracking needs.

pub mod lexer;
pub mod statement;

pub use lexer::{Lexer, StringKind, Token, TokenKind};
pub use statement::{
    classify, classify_with, split_statements, split_statements_with, statements_with, Discard,
    PinReason, Statement, StatementInfo, StatementKind,
};
