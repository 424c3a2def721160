//! Client encoding names as PostgreSQL reports them: it accepts any spelling that matches
//! one of its names ignoring case and punctuation (`utf-8`, `euc-jp`) and reports its own
//! (`UTF8`, `EUC_JP`) in ParameterStatus; drivers compare against that.

/// PostgreSQL's encoding names (`pg_enc2name_tbl`).
const NAMES: &[&str] = &[
    "SQL_ASCII",
    "EUC_JP",
    "EUC_CN",
    "EUC_KR",
    "EUC_TW",
    "EUC_JIS_2004",
    "UTF8",
    "MULE_INTERNAL",
    "LATIN1",
    "LATIN2",
    "LATIN3",
    "LATIN4",
    "LATIN5",
    "LATIN6",
    "LATIN7",
    "LATIN8",
    "LATIN9",
    "LATIN10",
    "WIN1256",
    "WIN1258",
    "WIN866",
    "WIN874",
    "KOI8R",
    "WIN1251",
    "WIN1252",
    "ISO_8859_5",
    "ISO_8859_6",
    "ISO_8859_7",
    "ISO_8859_8",
    "WIN1250",
    "WIN1253",
    "WIN1254",
    "WIN1255",
    "WIN1257",
    "KOI8U",
    "SJIS",
    "BIG5",
    "GBK",
    "UHC",
    "GB18030",
    "JOHAB",
    "SHIFT_JIS_2004",
];

/// Common aliases PostgreSQL also accepts (`pg_encname_tbl`), by their squashed spelling.
const ALIASES: &[(&str, &str)] = &[
    ("unicode", "UTF8"),
    ("iso88591", "LATIN1"),
    ("iso88592", "LATIN2"),
    ("iso88593", "LATIN3"),
    ("iso88594", "LATIN4"),
    ("iso88599", "LATIN5"),
    ("iso885910", "LATIN6"),
    ("iso885913", "LATIN7"),
    ("iso885914", "LATIN8"),
    ("iso885915", "LATIN9"),
    ("iso885916", "LATIN10"),
    ("win", "WIN1251"),
    ("alt", "WIN866"),
    ("koi8", "KOI8R"),
    ("mskanji", "SJIS"),
    ("shiftjis", "SJIS"),
    ("tcvn", "WIN1258"),
    ("tcvn5712", "WIN1258"),
    ("vscii", "WIN1258"),
    ("abc", "WIN1258"),
];

/// The name PostgreSQL reports for client encoding `name`, if it knows the encoding.
pub fn canonical(name: &str) -> Option<&'static str> {
    let squashed = squash(name);
    NAMES
        .iter()
        .copied()
        .find(|known| squash(known) == squashed)
        .or_else(|| {
            ALIASES
                .iter()
                .find(|(alias, _)| *alias == squashed)
                .map(|(_, known)| *known)
        })
}

/// Lowercase letters and digits only, as PostgreSQL compares encoding names.
fn squash(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::canonical;

    #[test]
    fn spellings_map_to_postgresqls_names() {
        assert_eq!(canonical("utf8"), Some("UTF8"));
        assert_eq!(canonical("UTF-8"), Some("UTF8"));
        assert_eq!(canonical("euc-jp"), Some("EUC_JP"));
        assert_eq!(canonical("latin1"), Some("LATIN1"));
        assert_eq!(canonical("ISO-8859-1"), Some("LATIN1"));
        assert_eq!(canonical("unicode"), Some("UTF8"));
        assert_eq!(canonical("klingon"), None);
    }
}
