//! The transaction status a server reports in ReadyForQuery (`I`, `T`, `E`).

/// Where the client's session stands between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TxStatus {
    /// Not in a transaction block.
    #[default]
    Idle,
    /// In a transaction block.
    InBlock,
    /// In a failed transaction block: statements are refused until it ends.
    Failed,
}

impl TxStatus {
    /// The status a ReadyForQuery body starts with; anything unknown counts as idle, as
    /// libpq does.
    pub fn from_byte(byte: u8) -> TxStatus {
        match byte {
            b'T' => TxStatus::InBlock,
            b'E' => TxStatus::Failed,
            _ => TxStatus::Idle,
        }
    }

    /// The status byte of a ReadyForQuery.
    pub fn as_byte(self) -> u8 {
        match self {
            TxStatus::Idle => b'I',
            TxStatus::InBlock => b'T',
            TxStatus::Failed => b'E',
        }
    }

    /// Outside any transaction block.
    pub fn is_idle(self) -> bool {
        self == TxStatus::Idle
    }
}

#[cfg(test)]
mod tests {
    use super::TxStatus;

    #[test]
    fn bytes_round_trip() {
        for status in [TxStatus::Idle, TxStatus::InBlock, TxStatus::Failed] {
            assert_eq!(TxStatus::from_byte(status.as_byte()), status);
        }
        assert_eq!(TxStatus::from_byte(b'?'), TxStatus::Idle);
    }
}
