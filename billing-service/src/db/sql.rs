//! What differs in the SQL text between the engines, so that the table modules write each query
//! once.
//!
//! - **Placeholders.** Queries are written as PostgreSQL and SQLite read them, `$1, $2, ...`, each
//!   number once and in order; [`text`] gives MySQL's `?` for the same statement (sqlx's `Any`
//!   driver does not rewrite them). The order rule is what makes the two bind lists the same.
//! - **Upserts.** PostgreSQL and SQLite say `ON CONFLICT ... DO UPDATE ... WHERE`; MySQL has
//!   `ON DUPLICATE KEY UPDATE`, with no `WHERE`, assignments applied left to right, and a
//!   rows-affected count that cannot tell an insert from a row left as it was. A table declares
//!   its upsert once as an [`Upsert`] (columns, what each does on conflict, which version wins);
//!   both statements are derived from that declaration, and [`Upsert::execute`] reports the rows
//!   really written on every engine.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, OnceLock};

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection};

use super::Engine;

/// The statement in the engine's placeholders: `$n` for PostgreSQL and SQLite, `?` for MySQL.
///
/// # Panics
/// When the text numbers its placeholders other than `$1, $2, ...` in order, each once: a bug in
/// a constant, found by the first test that runs the statement on MySQL.
pub fn text(engine: Engine, sql: &'static str) -> &'static str {
    if engine != Engine::Mysql {
        return sql;
    }
    // Keyed by where the constant is: converted once per statement, not per call.
    static CONVERTED: LazyLock<Mutex<HashMap<(usize, usize), &'static str>>> =
        LazyLock::new(Default::default);
    let mut converted = CONVERTED.lock().unwrap_or_else(|e| e.into_inner());
    converted
        .entry((sql.as_ptr() as usize, sql.len()))
        .or_insert_with(|| Box::leak(question_marks(sql).into_boxed_str()))
}

/// `sqlx::query` of [`text`].
pub fn query<'q>(engine: Engine, sql: &'static str) -> Query<'q, Any, AnyArguments> {
    sqlx::query(text(engine, sql))
}

/// `$1 ... $n` → `?`, outside quoted text, checking the numbering.
fn question_marks(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut quoted = false;
    let mut expected = 1;
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c != '$' || quoted {
            out.push(c);
            continue;
        }
        let mut number = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            number.push(*d);
            chars.next();
        }
        assert_eq!(
            number.parse::<usize>().ok(),
            Some(expected),
            "placeholders must be numbered $1, $2, ... in order, each once: {sql}"
        );
        expected += 1;
        out.push('?');
    }
    out
}

/// `first`, `first + 1`, ... as `count` comma-separated placeholders.
pub fn placeholders(engine: Engine, first: usize, count: usize) -> String {
    let mut sql = String::with_capacity(count * 6);
    for n in first..first + count {
        if n > first {
            sql.push(',');
        }
        push_placeholder(&mut sql, engine, n);
    }
    sql
}

/// `($1,$2,...),($n+1,...)`: `rows` groups of `columns` placeholders.
pub fn push_placeholder_rows(sql: &mut String, engine: Engine, rows: usize, columns: usize) {
    for row in 0..rows {
        if row > 0 {
            sql.push(',');
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push(',');
            }
            push_placeholder(sql, engine, row * columns + column + 1);
        }
        sql.push(')');
    }
}

/// How many rows a multi-row statement for `rows` rows is written for: the next power of two or
/// three quarters of it (1, 2, 3, 4, 6, 8, 12, 16, 24, ...), so that each connection keeps a
/// few of them prepared. A prepared statement is parsed and planned once and then sent in one
/// round trip; a text for every row count could not be kept (there would be hundreds), and sqlx
/// sends a statement it does not keep in two round trips (`Parse` and `Describe`, then `Bind`
/// and `Execute`), each parsed and planned anew (BENCHMARKS.md). The rows past the caller's are
/// still sent and read, so at most a third of a statement is padding, not half. See
/// [`push_padded_select`].
pub fn padded_rows(rows: usize) -> usize {
    let power = rows.next_power_of_two();
    let three_quarters = power / 4 * 3;
    if rows <= three_quarters {
        three_quarters
    } else {
        power
    }
}

/// `SELECT column2, ... FROM (VALUES (1,$1,...),(2,...),...) AS batch WHERE column1 <= $n`:
/// `rows` rows of `columns` bound values, each led by its number, of which only the first `$n`
/// (bound after them) are selected. So one statement serves every count up to `rows`; the
/// caller fills the rows past its own with values of the same types (nulls, or a copy of a row),
/// which the `WHERE` leaves out. PostgreSQL and SQLite name a `VALUES` list's columns alike.
pub fn push_padded_select(sql: &mut String, rows: usize, columns: usize) {
    let selected: Vec<String> = (2..columns + 2).map(|n| format!("column{n}")).collect();
    sql.push_str("SELECT ");
    sql.push_str(&selected.join(", "));
    sql.push_str(" FROM (VALUES ");
    for row in 0..rows {
        if row > 0 {
            sql.push(',');
        }
        sql.push('(');
        sql.push_str(&(row + 1).to_string());
        for column in 0..columns {
            sql.push(',');
            push_placeholder(sql, Engine::Postgres, row * columns + column + 1);
        }
        sql.push(')');
    }
    sql.push_str(") AS batch WHERE column1 <= ");
    push_placeholder(sql, Engine::Postgres, rows * columns + 1);
}

/// The texts of one multi-row statement, one per [`padded_rows`] count, each made on first use.
#[derive(Default)]
pub struct PaddedTexts([OnceLock<String>; 32]);

impl PaddedTexts {
    pub const fn new() -> Self {
        Self([const { OnceLock::new() }; 32])
    }

    /// The text for `rows` (a [`padded_rows`] count below 2^16), made by `make` the first time.
    pub fn get(&'static self, rows: usize, make: impl FnOnce() -> String) -> &'static str {
        debug_assert_eq!(padded_rows(rows), rows);
        // Two slots per power of two: the power itself, and three quarters of the next.
        let slot = 2 * rows.ilog2() as usize + usize::from(!rows.is_power_of_two());
        self.0[slot].get_or_init(make)
    }
}

fn push_placeholder(sql: &mut String, engine: Engine, n: usize) {
    match engine {
        Engine::Mysql => sql.push('?'),
        _ => {
            sql.push('$');
            sql.push_str(&n.to_string());
        }
    }
}

/// What an upsert does to a column of the row already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// Takes the incoming value.
    Replace,
    /// Takes the incoming value unless that is null.
    PreferIncoming,
    /// Takes the incoming value only while the row has none.
    FillEmpty,
    /// Takes the incoming value, but is bookkeeping (`updated_at_ms`): a row that differs only
    /// there is not "different".
    Stamp,
    /// Keeps the row's value (`created_at_ms`, a placeholder row's literals).
    Keep,
}

/// When the row already there is updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Always.
    Always,
    /// When the incoming `version` is at least the row's (newer wins). A boolean bound after the
    /// columns says the values were listed rather than carried by an event: then only where a
    /// column other than `Stamp`s and the version differs, or the row is a placeholder whose
    /// version is still 0 (`placeholders`).
    NewerWins {
        version: &'static str,
        placeholders: bool,
    },
    /// When a `FillEmpty` column gets a value it did not have.
    FillsEmpty,
}

/// An `INSERT` that updates the row with the same key, declared once for every engine. The
/// columns are bound in their order (the key among them), then the listed flag of
/// [`Guard::NewerWins`].
pub struct Upsert {
    table: &'static str,
    key: &'static str,
    columns: &'static [(&'static str, OnConflict)],
    guard: Guard,
    /// The statement for PostgreSQL and SQLite, for MySQL, and MySQL's "is the key there",
    /// made on first use.
    texts: [OnceLock<String>; 3],
    /// PostgreSQL's statements for several rows.
    rows_texts: PaddedTexts,
}

impl Upsert {
    pub const fn new(
        table: &'static str,
        key: &'static str,
        columns: &'static [(&'static str, OnConflict)],
        guard: Guard,
    ) -> Self {
        Self {
            table,
            key,
            columns,
            guard,
            texts: [OnceLock::new(), OnceLock::new(), OnceLock::new()],
            rows_texts: PaddedTexts::new(),
        }
    }

    /// Runs the upsert for the row keyed `key`, with the values `bind` binds (the columns in
    /// their order, then the listed flag of [`Guard::NewerWins`]). Returns the rows written: 1
    /// when the row was inserted or changed, 0 when it was left as it was.
    pub async fn execute<'q>(
        &'static self,
        conn: &mut AnyConnection,
        key: &str,
        bind: impl FnOnce(Query<'q, Any, AnyArguments>) -> Query<'q, Any, AnyArguments>,
    ) -> Result<u64, sqlx::Error> {
        let mut existed = None;
        if Engine::of_connection(conn) == Engine::Mysql {
            let exists = self.texts[2]
                .get_or_init(|| format!("SELECT 1 FROM {} WHERE {} = ?", self.table, self.key));
            let row = sqlx::query(exists.as_str())
                .bind(key)
                .fetch_optional(&mut *conn)
                .await?;
            existed = Some(row.is_some());
        }
        self.execute_knowing(conn, existed, bind).await
    }

    /// [`Upsert::execute`] for a caller that has just read the row in its transaction and so
    /// knows whether it exists (MySQL needs that to count; the others ignore it).
    pub async fn execute_knowing<'q>(
        &'static self,
        conn: &mut AnyConnection,
        existed: Option<bool>,
        bind: impl FnOnce(Query<'q, Any, AnyArguments>) -> Query<'q, Any, AnyArguments>,
    ) -> Result<u64, sqlx::Error> {
        let mysql = Engine::of_connection(conn) == Engine::Mysql;
        let text = match mysql {
            true => self.texts[1].get_or_init(|| self.mysql()),
            false => self.texts[0].get_or_init(|| self.on_conflict()),
        };
        let affected = bind(sqlx::query(text.as_str()))
            .execute(&mut *conn)
            .await?
            .rows_affected();
        // MySQL counts an inserted row and a row found but left as it was alike (1; a changed
        // row is 2), hence the read before. A row inserted by someone else between the two
        // statements can only make this count one write too many.
        Ok(match (mysql, existed) {
            (true, Some(true)) => u64::from(affected == 2),
            (true, _) => u64::from(affected > 0),
            (false, _) => affected,
        })
    }

    /// Writes several rows with one statement (on SQLite, with the one-row statement for each),
    /// as if each were upserted in turn, for events (the listed flag is false). Keys must be
    /// distinct: PostgreSQL refuses to update one row twice in a statement, so the caller keeps
    /// the last of each key (in queue order, the newest: the row applying them in turn would end
    /// with). Rows written are not counted.
    pub async fn execute_rows<'q, T>(
        &'static self,
        conn: &mut AnyConnection,
        rows: &'q [T],
        bind: impl Fn(Query<'q, Any, AnyArguments>, &'q T) -> Query<'q, Any, AnyArguments>,
    ) -> Result<(), sqlx::Error> {
        let engine = Engine::of_connection(conn);
        let newer_wins = matches!(self.guard, Guard::NewerWins { .. });
        if engine == Engine::Sqlite {
            // In the process, a statement costs no round trip, while compiling one of many rows
            // costs more than running the prepared one-row statement for each.
            for row in rows {
                self.execute_knowing(conn, None, |query| {
                    let query = bind(query, row);
                    if newer_wins { query.bind(false) } else { query }
                })
                .await?;
            }
            return Ok(());
        }
        // Well under every engine's limit on bound parameters, and a power of two (which
        // `padded_rows` keeps).
        let per_statement = 1 << (30_000 / (self.columns.len() + 2)).ilog2();
        for chunk in rows.chunks(per_statement) {
            if engine == Engine::Mysql {
                // Only placeholders are generated; not prepared, as MySQL's statement is not
                // padded.
                let text = self.mysql_rows(chunk.len());
                let mut query = sqlx::query(sqlx::AssertSqlSafe(text)).persistent(false);
                for row in chunk {
                    query = bind(query, row);
                    if newer_wins {
                        query = query.bind(false);
                    }
                }
                query.execute(&mut *conn).await?;
                continue;
            }
            let padded = padded_rows(chunk.len());
            let text = self
                .rows_texts
                .get(padded, || self.on_conflict_padded(padded));
            let mut query = sqlx::query(text);
            // The rows past the chunk's are copies of its first, left out by the statement.
            for i in 0..padded {
                query = bind(query, chunk.get(i).unwrap_or(&chunk[0]));
            }
            query = query.bind(i64::try_from(chunk.len()).unwrap_or(i64::MAX));
            if newer_wins {
                query = query.bind(false);
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
    }

    fn names(&self) -> String {
        self.columns
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The columns an update may change, with the value each takes (`new` names the incoming
    /// row).
    fn updates(&self, new: &str) -> Vec<(&'static str, OnConflict, String)> {
        let t = self.table;
        self.columns
            .iter()
            .filter(|(name, _)| *name != self.key)
            .filter_map(|&(c, rule)| {
                let value = match rule {
                    OnConflict::Replace | OnConflict::Stamp => format!("{new}.{c}"),
                    OnConflict::PreferIncoming => format!("COALESCE({new}.{c}, {t}.{c})"),
                    OnConflict::FillEmpty => format!("COALESCE({t}.{c}, {new}.{c})"),
                    OnConflict::Keep => return None,
                };
                Some((c, rule, value))
            })
            .collect()
    }

    /// The condition for updating, read against the row as it was; `listed` is the flag's
    /// expression and `distinct` writes "a and b differ, nulls included".
    fn condition(&self, new: &str, listed: &str, distinct: fn(&str, &str) -> String) -> String {
        let t = self.table;
        match self.guard {
            Guard::Always => "TRUE".to_owned(),
            Guard::FillsEmpty => self
                .columns
                .iter()
                .filter(|(_, rule)| *rule == OnConflict::FillEmpty)
                .map(|(c, _)| format!("({t}.{c} IS NULL AND {new}.{c} IS NOT NULL)"))
                .collect::<Vec<_>>()
                .join(" OR "),
            Guard::NewerWins {
                version,
                placeholders,
            } => {
                let mut changed = vec![format!("{listed} = FALSE")];
                if placeholders {
                    changed.push(format!("{t}.{version} = 0"));
                }
                for (c, rule, value) in self.updates(new) {
                    if c != version && rule != OnConflict::Stamp {
                        changed.push(distinct(&format!("{t}.{c}"), &value));
                    }
                }
                format!(
                    "{t}.{version} <= {new}.{version}\n           AND ({})",
                    changed.join("\n                OR ")
                )
            }
        }
    }

    /// PostgreSQL's and SQLite's statement.
    fn on_conflict(&self) -> String {
        let mut values = String::from("VALUES ");
        push_placeholder_rows(&mut values, Engine::Postgres, 1, self.columns.len());
        self.on_conflict_from(&values, self.columns.len() + 1)
    }

    /// PostgreSQL's statement for up to `rows` rows ([`push_padded_select`]), the listed flag
    /// bound after the count.
    fn on_conflict_padded(&self, rows: usize) -> String {
        let mut select = String::new();
        push_padded_select(&mut select, rows, self.columns.len());
        self.on_conflict_from(&select, rows * self.columns.len() + 2)
    }

    /// The upsert of the rows `source` gives, the listed flag being placeholder `listed`.
    fn on_conflict_from(&self, source: &str, listed: usize) -> String {
        let sets = self
            .updates("excluded")
            .into_iter()
            .map(|(c, _, value)| format!("{c} = {value}"))
            .collect::<Vec<_>>()
            .join(",\n            ");
        let listed = format!("${listed}");
        let mut sql = format!(
            "INSERT INTO {} ({}) {source}\n         ON CONFLICT ({}) DO UPDATE SET\n            {sets}",
            self.table,
            self.names(),
            self.key
        );
        if self.guard != Guard::Always {
            let distinct = |a: &str, b: &str| format!("{a} IS DISTINCT FROM {b}");
            sql.push_str("\n         WHERE ");
            sql.push_str(&self.condition("excluded", &listed, distinct));
        }
        sql
    }

    /// MySQL's statement. The incoming row is a derived table (`new`), which MySQL 8 and MariaDB
    /// both accept (MariaDB has no `AS new` row alias; MySQL deprecates `VALUES(col)`).
    /// `ON DUPLICATE KEY UPDATE` has no `WHERE` and applies its assignments left to right, each
    /// seeing the ones before: so the stamps and then the version are assigned first, under the
    /// whole condition read on the untouched row; every other column then follows the version,
    /// which by then equals the incoming one exactly when the row is to be updated (or when
    /// nothing differs, where taking the incoming values changes nothing).
    fn mysql(&self) -> String {
        self.mysql_rows(1)
    }

    /// MySQL's statement for `rows` rows: the derived table is their `UNION ALL`, each with its
    /// own listed flag. MySQL applies the rows in turn.
    fn mysql_rows(&self, rows: usize) -> String {
        let names = self.names();
        let mut selected: Vec<String> = self
            .columns
            .iter()
            .map(|(c, _)| format!("? AS {c}"))
            .collect();
        if matches!(self.guard, Guard::NewerWins { .. }) {
            selected.push("? AS listed_".to_owned());
        }
        let first = selected.join(", ");
        let others = vec!["?"; selected.len()].join(", ");
        let mut derived = first;
        for _ in 1..rows {
            derived.push_str(" UNION ALL SELECT ");
            derived.push_str(&others);
        }
        let distinct = |a: &str, b: &str| format!("NOT ({a} <=> {b})");
        let condition = self.condition("new", "new.listed_", distinct);
        let updates = self.updates("new");
        let t = self.table;
        let sets: Vec<String> = match self.guard {
            Guard::Always | Guard::FillsEmpty => updates
                .into_iter()
                .map(|(c, _, value)| format!("{c} = {value}"))
                .collect(),
            Guard::NewerWins { version, .. } => {
                let (first, rest): (Vec<_>, Vec<_>) = updates
                    .into_iter()
                    .partition(|(c, rule, _)| *rule == OnConflict::Stamp || *c == version);
                let mut first = first;
                // Stamps before the version: the condition reads the version.
                first.sort_by_key(|(c, _, _)| *c == version);
                first
                    .into_iter()
                    .map(|(c, _, value)| format!("{c} = IF({condition}, {value}, {t}.{c})"))
                    .chain(rest.into_iter().map(|(c, _, value)| {
                        format!("{c} = IF({t}.{version} = new.{version}, {value}, {t}.{c})")
                    }))
                    .collect()
            }
        };
        format!(
            "INSERT INTO {t} ({names})\n         SELECT {names} FROM (SELECT {derived}) AS new\n         ON DUPLICATE KEY UPDATE\n            {}",
            sets.join(",\n            ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_gets_question_marks_outside_quotes() {
        assert_eq!(
            question_marks("SELECT '$1', a FROM t WHERE b = $1 AND c IN ($2,$3)"),
            "SELECT '$1', a FROM t WHERE b = ? AND c IN (?,?)"
        );
        assert_eq!(placeholders(Engine::Postgres, 3, 2), "$3,$4");
        assert_eq!(placeholders(Engine::Mysql, 3, 2), "?,?");
        let mut rows = String::new();
        push_placeholder_rows(&mut rows, Engine::Postgres, 2, 2);
        assert_eq!(rows, "($1,$2),($3,$4)");
    }

    #[test]
    #[should_panic(expected = "in order, each once")]
    fn a_placeholder_used_twice_is_refused_for_mysql() {
        question_marks("SELECT 1 WHERE a = $1 OR b = $1");
    }

    static EXAMPLE: Upsert = Upsert::new(
        "things",
        "id",
        &[
            ("id", OnConflict::Replace),
            ("owner", OnConflict::PreferIncoming),
            ("name", OnConflict::Replace),
            ("version", OnConflict::Replace),
            ("created_at_ms", OnConflict::Keep),
            ("updated_at_ms", OnConflict::Stamp),
        ],
        Guard::NewerWins {
            version: "version",
            placeholders: true,
        },
    );

    #[test]
    fn an_upsert_is_written_for_each_engine() {
        assert_eq!(
            EXAMPLE.on_conflict(),
            "INSERT INTO things (id, owner, name, version, created_at_ms, updated_at_ms) VALUES ($1,$2,$3,$4,$5,$6)
         ON CONFLICT (id) DO UPDATE SET
            owner = COALESCE(excluded.owner, things.owner),
            name = excluded.name,
            version = excluded.version,
            updated_at_ms = excluded.updated_at_ms
         WHERE things.version <= excluded.version
           AND ($7 = FALSE
                OR things.version = 0
                OR things.owner IS DISTINCT FROM COALESCE(excluded.owner, things.owner)
                OR things.name IS DISTINCT FROM excluded.name)"
        );
        let mysql = EXAMPLE.mysql();
        assert!(mysql.starts_with(
            "INSERT INTO things (id, owner, name, version, created_at_ms, updated_at_ms)
         SELECT id, owner, name, version, created_at_ms, updated_at_ms FROM (SELECT ? AS id, ? AS owner, ? AS name, ? AS version, ? AS created_at_ms, ? AS updated_at_ms, ? AS listed_) AS new
         ON DUPLICATE KEY UPDATE
            updated_at_ms = IF(things.version <= new.version"
        ), "{mysql}");
        let order: Vec<&str> = mysql
            .lines()
            .filter_map(|l| l.trim().split_once(" = IF(").map(|(c, _)| c))
            .collect();
        assert_eq!(order, ["updated_at_ms", "version", "owner", "name"]);
        assert!(mysql.contains("NOT (things.name <=> new.name)"), "{mysql}");
        assert!(!mysql.contains('$'));
    }

    #[test]
    fn several_rows_share_one_statement() {
        assert_eq!(
            [1, 2, 3, 4, 5, 6, 7, 17, 25, 33, 48, 49, 192, 193, 256].map(padded_rows),
            [1, 2, 3, 4, 6, 6, 8, 24, 32, 48, 48, 64, 192, 256, 256]
        );
        // Each count has a slot of its own.
        let slots: std::collections::HashSet<usize> = (1..=4096).map(padded_rows).collect();
        let texts: &'static PaddedTexts = Box::leak(Box::new(PaddedTexts::new()));
        for rows in &slots {
            assert_eq!(texts.get(*rows, || rows.to_string()), rows.to_string());
        }
        let mut select = String::new();
        push_padded_select(&mut select, 2, 3);
        assert_eq!(
            select,
            "SELECT column2, column3, column4 FROM (VALUES (1,$1,$2,$3),(2,$4,$5,$6)) AS batch WHERE column1 <= $7"
        );
        let two = EXAMPLE.on_conflict_padded(2);
        assert!(
            two.contains(") SELECT column2, column3, column4, column5, column6, column7 FROM (VALUES (1,$1,$2,$3,$4,$5,$6),(2,$7,$8,$9,$10,$11,$12)) AS batch WHERE column1 <= $13\n"),
            "{two}"
        );
        assert!(two.contains("AND ($14 = FALSE"), "{two}");
        assert_eq!(
            two.split_once("\n").map(|(_, rest)| rest),
            EXAMPLE
                .on_conflict()
                .split_once("\n")
                .map(|(_, rest)| rest.replace("$7", "$14"))
                .as_deref()
        );
        let mysql = EXAMPLE.mysql_rows(2);
        assert!(
            mysql.contains("? AS listed_ UNION ALL SELECT ?, ?, ?, ?, ?, ?, ?) AS new"),
            "{mysql}"
        );
        assert_eq!(mysql.matches('?').count(), 14);
    }
}
