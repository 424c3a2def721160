//! Keyword enums: one declaration gives the config spelling, serde, `Display` and `FromStr`.
//!
//! The same spelling is used in the TOML file, in query hints (`consistency=eventual`), in
//! `SET causeway.consistency` and in metric labels, so it is written down exactly once.

/// A string that is not one of an enum's keywords.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value {value:?}; expected one of: {expected}")]
pub struct UnknownKeyword {
    value: String,
    expected: String,
}

impl UnknownKeyword {
    /// Builds the error from the rejected text and the accepted spellings.
    pub(crate) fn new(value: &str, accepted: &[&str]) -> Self {
        UnknownKeyword {
            value: value.to_owned(),
            expected: accepted.join(", "),
        }
    }
}

/// Declares a fieldless enum whose variants are spelled as the given string literals.
macro_rules! keyword_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
        default = $default:ident;
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The spelling used in the config file, hints and metric labels.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl Default for $name {
            fn default() -> Self {
                $name::$default
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::config::UnknownKeyword;

            /// Parses the keyword, ignoring ASCII case and surrounding spaces.
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                let wanted = text.trim();
                Self::ALL
                    .iter()
                    .copied()
                    .find(|value| value.as_str().eq_ignore_ascii_case(wanted))
                    .ok_or_else(|| {
                        $crate::config::UnknownKeyword::new(text, &[$($text),+])
                    })
            }
        }
    };
}

pub(crate) use keyword_enum;
