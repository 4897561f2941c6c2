//! Migration scripts under Flyway's naming, and Flyway's checksum.
//!
//! The same files must be usable by Flyway itself, so names are read as Flyway reads them
//! (`V1_1__add_x.sql` is version 1.1, description "add x") and the checksum is Flyway's: CRC-32
//! over the UTF-8 bytes of each line without its terminator, a leading BOM dropped, stored as a
//! signed 32-bit integer. A history row written by either tool is then understood by the other.

use std::cmp::Ordering;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `V<version>__<description>.sql`: applied once, in version order.
    Versioned,
    /// `U<version>__<description>.sql`: reverts the versioned script of the same version.
    Undo,
    /// `R__<description>.sql`: applied after the versioned ones whenever its checksum changes.
    Repeatable,
}

/// A dotted version (`1`, `1.1`, `2.0.3`), compared part by part as numbers.
#[derive(Debug, Clone)]
pub struct Version(Vec<u64>);

impl Version {
    pub fn parse(raw: &str) -> Option<Self> {
        raw.split(['.', '_'])
            .map(|part| part.parse::<u64>().ok())
            .collect::<Option<Vec<_>>>()
            .filter(|parts| !parts.is_empty())
            .map(Self)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        // Flyway treats 1 and 1.0 as the same version: compare with trailing zeros ignored.
        let trim = |v: &[u64]| v.len() - v.iter().rev().take_while(|p| **p == 0).count();
        self.0[..trim(&self.0)].cmp(&other.0[..trim(&other.0)])
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(u64::to_string).collect();
        f.write_str(&parts.join("."))
    }
}

#[derive(Debug, Clone)]
pub struct Script {
    pub kind: Kind,
    /// `None` for repeatable scripts.
    pub version: Option<Version>,
    pub description: String,
    /// The file name, as recorded in the history's `script` column.
    pub name: String,
    pub sql: String,
    pub checksum: i32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScriptError {
    #[error(
        "{0}: not a Flyway migration name (expected V<version>__<description>.sql, U<version>__<description>.sql or R__<description>.sql)"
    )]
    BadName(String),
    #[error("{0} and {1} have the same version")]
    DuplicateVersion(String, String),
    #[error("{0} and {1} have the same description")]
    DuplicateRepeatable(String, String),
    #[error("{0} undoes version {1}, which has no V script")]
    OrphanUndo(String, String),
}

/// Flyway's checksum of a script's text.
pub fn checksum(text: &str) -> i32 {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut crc = crc32fast::Hasher::new();
    // Java's BufferedReader.readLine: lines end at \n, \r or \r\n.
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        crc.update(&rest.as_bytes()[..end]);
        rest = &rest[end..];
        if rest.starts_with("\r\n") {
            rest = &rest[2..];
        } else if !rest.is_empty() {
            rest = &rest[1..];
        }
    }
    // Flyway stores the unsigned CRC in a signed int column.
    crc.finalize() as i32
}

impl Script {
    pub fn parse(name: &str, sql: String) -> Result<Self, ScriptError> {
        let bad = || ScriptError::BadName(name.to_owned());
        let stem = name.strip_suffix(".sql").ok_or_else(bad)?;
        let (prefix, description) = stem.split_once("__").ok_or_else(bad)?;
        if description.is_empty() {
            return Err(bad());
        }
        let (kind, version) = match prefix.split_at_checked(1).ok_or_else(bad)? {
            ("R", "") => (Kind::Repeatable, None),
            ("V", v) => (Kind::Versioned, Some(Version::parse(v).ok_or_else(bad)?)),
            ("U", v) => (Kind::Undo, Some(Version::parse(v).ok_or_else(bad)?)),
            _ => return Err(bad()),
        };
        Ok(Self {
            kind,
            version,
            description: description.replace('_', " "),
            name: name.to_owned(),
            checksum: checksum(&sql),
            sql,
        })
    }
}

impl Script {
    /// The script's statements, in order: split at each `;` outside quotes and `--` comments,
    /// without the ones that are only comments. For engines that cannot run a script as one
    /// transaction, so that a failure can name the statement it stopped at.
    pub fn statements(&self) -> Vec<&str> {
        let mut statements = Vec::new();
        let (mut start, mut quoted, mut comment) = (0, false, false);
        let text = self.sql.as_str();
        let bytes = text.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'\n' if comment => comment = false,
                _ if comment => {}
                b'\'' => quoted = !quoted,
                b'-' if !quoted && bytes.get(i + 1) == Some(&b'-') => comment = true,
                b';' if !quoted => {
                    statements.push(&text[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        statements.push(&text[start..]);
        statements
            .into_iter()
            .map(str::trim)
            .filter(|s| {
                s.lines()
                    .any(|l| !l.trim().is_empty() && !l.trim().starts_with("--"))
            })
            .collect()
    }
}

/// A checked set of scripts: versions unique, every undo matched by a versioned script.
#[derive(Debug, Clone)]
pub struct Scripts {
    /// Sorted by version.
    pub versioned: Vec<Script>,
    pub undo: Vec<Script>,
    /// Sorted by description, Flyway's order for repeatables.
    pub repeatable: Vec<Script>,
}

impl Scripts {
    pub fn new(files: impl IntoIterator<Item = (String, String)>) -> Result<Self, ScriptError> {
        let mut scripts = Self {
            versioned: Vec::new(),
            undo: Vec::new(),
            repeatable: Vec::new(),
        };
        for (name, sql) in files {
            let script = Script::parse(&name, sql)?;
            match script.kind {
                Kind::Versioned => scripts.versioned.push(script),
                Kind::Undo => scripts.undo.push(script),
                Kind::Repeatable => scripts.repeatable.push(script),
            }
        }
        scripts.versioned.sort_by(|a, b| a.version.cmp(&b.version));
        scripts.undo.sort_by(|a, b| a.version.cmp(&b.version));
        scripts
            .repeatable
            .sort_by(|a, b| a.description.cmp(&b.description));
        for list in [&scripts.versioned, &scripts.undo] {
            if let Some(pair) = list.windows(2).find(|w| w[0].version == w[1].version) {
                return Err(ScriptError::DuplicateVersion(
                    pair[0].name.clone(),
                    pair[1].name.clone(),
                ));
            }
        }
        if let Some(pair) = scripts
            .repeatable
            .windows(2)
            .find(|w| w[0].description == w[1].description)
        {
            return Err(ScriptError::DuplicateRepeatable(
                pair[0].name.clone(),
                pair[1].name.clone(),
            ));
        }
        if let Some(orphan) = scripts
            .undo
            .iter()
            .find(|u| scripts.versioned_script(u.version.as_ref()).is_none())
        {
            return Err(ScriptError::OrphanUndo(
                orphan.name.clone(),
                orphan
                    .version
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            ));
        }
        Ok(scripts)
    }

    pub fn versioned_script(&self, version: Option<&Version>) -> Option<&Script> {
        self.versioned
            .iter()
            .find(|s| s.version.as_ref() == version)
    }

    pub fn undo_script(&self, version: &Version) -> Option<&Script> {
        self.undo
            .iter()
            .find(|s| s.version.as_ref() == Some(version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_flyway_names() {
        let v = Script::parse("V1_2__add_users.sql", String::new()).unwrap();
        assert_eq!(v.kind, Kind::Versioned);
        assert_eq!(v.version.unwrap().to_string(), "1.2");
        assert_eq!(v.description, "add users");
        let r = Script::parse("R__views.sql", String::new()).unwrap();
        assert_eq!((r.kind, r.version), (Kind::Repeatable, None));
        let u = Script::parse("U3__drop.sql", String::new()).unwrap();
        assert_eq!(u.kind, Kind::Undo);
        for bad in [
            "V1_init.sql",
            "X1__a.sql",
            "V__a.sql",
            "Vx__a.sql",
            "V1__.sql",
            "V1__a.txt",
            "R1__a.sql",
        ] {
            assert!(Script::parse(bad, String::new()).is_err(), "{bad}");
        }
    }

    #[test]
    fn versions_compare_as_numbers() {
        let v = |s| Version::parse(s).unwrap();
        assert!(v("2") < v("10"));
        assert!(v("1.1") < v("1.10"));
        assert_eq!(v("1").cmp(&v("1.0")), Ordering::Equal);
    }

    #[test]
    fn statements_split_outside_quotes_and_comments() {
        let script = Script::parse(
            "V1__x.sql",
            "-- a comment; not a statement\nCREATE TABLE a (s TEXT DEFAULT ';');\n\n-- only a comment;\nDROP TABLE b;\n".to_owned(),
        )
        .unwrap();
        assert_eq!(
            script.statements(),
            [
                "-- a comment; not a statement\nCREATE TABLE a (s TEXT DEFAULT ';')",
                "-- only a comment;\nDROP TABLE b"
            ]
        );
    }

    #[test]
    fn checksum_is_flyways() {
        // Flyway's value for a script "SELECT 1;\n" is the CRC-32 of "SELECT 1;" as a signed int.
        assert_eq!(
            checksum("SELECT 1;\n"),
            crc32fast::hash(b"SELECT 1;") as i32
        );
        // Line endings and a BOM do not change it; content does.
        assert_eq!(checksum("a\r\nb\n"), checksum("\u{feff}a\nb"));
        assert_eq!(checksum("a\rb"), checksum("a\nb"));
        assert_ne!(checksum("a\nb"), checksum("a\nc"));
    }

    #[test]
    fn sets_are_checked() {
        let files = |names: &[&str]| {
            names
                .iter()
                .map(|n| (n.to_string(), String::new()))
                .collect::<Vec<_>>()
        };
        assert!(matches!(
            Scripts::new(files(&["V1__a.sql", "V1.0__b.sql"])),
            Err(ScriptError::DuplicateVersion(..))
        ));
        assert!(matches!(
            Scripts::new(files(&["V1__a.sql", "U2__b.sql"])),
            Err(ScriptError::OrphanUndo(..))
        ));
        let ok =
            Scripts::new(files(&["V10__b.sql", "V2__a.sql", "U2__a.sql", "R__v.sql"])).unwrap();
        let order: Vec<&str> = ok.versioned.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(order, ["V2__a.sql", "V10__b.sql"]);
    }
}
