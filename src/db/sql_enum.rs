//! Closed sets of states stored as TEXT: one macro gives each its exact
//! spelling in SQL and JSON, so a misspelt state fails to compile instead
//! of matching nothing at run time.

/// `str_enum!(pub Name { Variant = "text", … })`: a `Copy` enum with
/// `as_str`, `parse`, `Display`, and serde and OpenAPI as its text.
#[macro_export]
macro_rules! str_enum {
    ($(#[$meta:meta])* $vis:vis $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        $vis enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// [`str_enum!`] stored as TEXT: `ToValue`/`FromValue` too (an unknown text
/// read back is a conversion error, never a silent default).
#[macro_export]
macro_rules! sql_enum {
    ($(#[$meta:meta])* $vis:vis $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $crate::str_enum!($(#[$meta])* $vis $name { $($(#[$vmeta])* $variant = $text),+ });

        impl $crate::db::sql::ToValue for $name {
            fn to_value(&self) -> $crate::db::sql::ValueRef<'_> {
                $crate::db::sql::ValueRef::Text(self.as_str())
            }
        }

        impl $crate::db::sql::FromValue for $name {
            fn from_value(v: $crate::db::sql::ValueRef<'_>) -> Result<Self, String> {
                let s = String::from_value(v)?;
                $name::parse(&s)
                    .ok_or_else(|| format!("unknown {} {s:?}", stringify!($name)))
            }
        }
    };
}
