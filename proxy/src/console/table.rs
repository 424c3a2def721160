//! A console result: named text columns and rows, encoded as RowDescription, DataRows and
//! CommandComplete (`SHOW`), as PgBouncer's console answers.

use bytes::BytesMut;

use crate::protocol::encode;

/// One result set; every value is text (`None` is NULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub columns: &'static [&'static str],
    pub rows: Vec<Vec<Option<String>>>,
}

impl Table {
    /// An empty result with these columns.
    pub fn new(columns: &'static [&'static str]) -> Table {
        Table {
            columns,
            rows: Vec::new(),
        }
    }

    /// Adds a row; it must have one value per column (a bug otherwise, padded with NULLs
    /// or cut rather than sent malformed).
    pub fn push(&mut self, mut row: Vec<Option<String>>) {
        debug_assert_eq!(row.len(), self.columns.len(), "{:?}", self.columns);
        row.resize(self.columns.len(), None);
        self.rows.push(row);
    }

    /// The value of `column` in row `index` (for tests and callers that check a result).
    pub fn get(&self, index: usize, column: &str) -> Option<&str> {
        let at = self.columns.iter().position(|c| *c == column)?;
        self.rows.get(index)?.get(at)?.as_deref()
    }

    /// RowDescription, the DataRows and CommandComplete `SHOW`.
    pub fn encode(&self, out: &mut BytesMut) {
        encode::text_row_description_of(out, self.columns);
        for row in &self.rows {
            let values: Vec<Option<&str>> = row.iter().map(Option::as_deref).collect();
            encode::text_data_row_of(out, &values);
        }
        encode::command_complete(out, "SHOW");
    }
}

/// A value as text.
pub fn text(value: impl ToString) -> Option<String> {
    Some(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::try_split;

    #[test]
    fn a_table_encodes_as_description_rows_and_show() {
        let mut table = Table::new(&["key", "value"]);
        table.push(vec![text("a"), None]);
        table.push(vec![text("b"), text(2)]);
        assert_eq!(table.get(1, "value"), Some("2"));
        assert_eq!(table.get(0, "value"), None);
        let mut out = BytesMut::new();
        table.encode(&mut out);
        let mut tags = Vec::new();
        while let Ok(Some(message)) = try_split(&mut out, 1 << 20) {
            tags.push(message.tag);
            if message.tag == b'D' {
                assert_eq!(&message.body()[..2], &[0, 2]);
            }
        }
        assert_eq!(tags, b"TDDC");
    }
}
