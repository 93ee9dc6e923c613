//! Per-transaction routing of a transaction-pooled client: what the work at the front of its
//! buffer needs (a write, or a read a replica may serve), which node gets it from the live
//! topology, and the client's read-your-writes position (the WAL position of its last commit,
//! and that of its consistency key, shared by every connection presenting the same key).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::statements::ClientStatements;
use super::Generation;
use crate::config::routing::ReadYourWrites;
use crate::config::RoutingSettings;
use crate::metrics::{RouteReason, RouteTarget};
use crate::router::classify::{classify, ClassifierConfig, TxEffect};
use crate::router::{
    self, key_directive, Balancer, ConsistencyKeys, Decision, Intent, KeyDirective, Reason,
    Request, RouteError, TxStart,
};
use crate::topology::Lsn;

/// How often a write waiting for a primary looks at the topology again.
const PRIMARY_POLL: Duration = Duration::from_millis(100);

/// Routing settings and classifier configuration per database and user, built once per
/// configuration so that clients share them instead of each holding a copy (the writing-function
/// list alone is over a kilobyte).
#[derive(Debug, Default)]
pub(crate) struct RoutingTable {
    by_database: HashMap<String, HashMap<String, UserRouting>>,
}

/// What the clients of one database and user share.
type UserRouting = (Arc<RoutingSettings>, Arc<ClassifierConfig>);

impl RoutingTable {
    pub fn build(config: &crate::config::Config) -> RoutingTable {
        let by_database = config
            .databases
            .iter()
            .map(|db| {
                let users = config
                    .users
                    .iter()
                    .map(|user| {
                        let settings = config.routing_settings(db, user);
                        let classifier = router::classifier_config(&settings);
                        (
                            user.name.clone(),
                            (Arc::new(settings), Arc::new(classifier)),
                        )
                    })
                    .collect();
                (db.name.clone(), users)
            })
            .collect();
        RoutingTable { by_database }
    }

    fn get(&self, database: &str, user: &str) -> Option<&UserRouting> {
        self.by_database.get(database)?.get(user)
    }
}

/// One client's routing settings and read-your-writes state.
#[derive(Debug)]
pub(super) struct ClientRouting {
    settings: Arc<RoutingSettings>,
    classifier: Arc<ClassifierConfig>,
    balancer: Arc<Balancer>,
    /// Whether the database has replicas at all (else reads and writes both go to the primary
    /// and nothing needs tracking).
    replicas: bool,
    /// `read_your_writes: lsn`: the primary's WAL position after this client's last write.
    last_write: Option<Lsn>,
    /// `read_your_writes: window`: reads stay on the primary until then.
    primary_until: Option<Instant>,
    /// The database's consistency keys (`None` when `consistency_keys_capacity` is 0).
    keys: Option<Arc<ConsistencyKeys>>,
    /// The key set with `SET pgsluice.consistency_key`, for the rest of the session.
    session_key: Option<Box<str>>,
    /// The key of the transaction being routed: a `/* pgsluice:key=.. */` comment in its first
    /// query string, else the session's key. Its commit is recorded under it.
    tx_key: Option<Box<str>>,
    /// A write under `tx_key` was announced to the keys and must be ended.
    key_writing: bool,
    /// Intents of the named statements this client executed, by proxy-wide statement id: a
    /// prepared statement is classified once (with this client's settings), not per Bind.
    prepared: HashMap<u64, (Intent, Reason)>,
}

/// Statement intents a client remembers before starting over.
const PREPARED_INTENTS: usize = 512;

/// A `SET`/`RESET pgsluice.consistency_key` query string the session answers itself.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct KeyCommand {
    /// Bytes of the client's Query message.
    pub consumed: usize,
    /// The CommandComplete tag to answer with.
    pub tag: &'static str,
}

/// Whether a simple query that went to a replica may be retried on the primary after 25006.
#[derive(Debug)]
pub(super) struct Retry {
    /// The client's Query message, to send again.
    pub query: bytes::Bytes,
}

impl ClientRouting {
    pub fn new(generation: &Generation, database: &str, user: &str) -> Option<ClientRouting> {
        let db = generation.config.database(database)?;
        let replicas = db.nodes.len() > 1;
        if !replicas {
            // One node: nothing to route, so no per-client routing state (an idle client stays
            // small); `SET pgsluice.consistency_key` is then an ordinary custom setting.
            return None;
        }
        let (settings, classifier) = generation.routing.get(database, user)?;
        Some(ClientRouting {
            classifier: classifier.clone(),
            balancer: generation.balancers.get(database)?.clone(),
            settings: settings.clone(),
            replicas,
            last_write: None,
            primary_until: None,
            keys: generation.consistency_keys.get(database).cloned(),
            session_key: None,
            tx_key: None,
            key_writing: false,
            prepared: HashMap::new(),
        })
    }

    /// If the front of `buf` is a whole simple Query that only sets or resets
    /// `pgsluice.consistency_key`, remembers the key and says how to answer; the query is not
    /// sent to Postgres (so `SHOW pgsluice.consistency_key` does not know it). A SET in a longer
    /// query string or in the extended protocol goes to Postgres, which accepts it as a custom
    /// setting; the key is still taken from it when it starts a transaction.
    pub fn key_command(&mut self, buf: &[u8]) -> Option<KeyCommand> {
        let (tag, sql, consumed) = front_sql(buf)?;
        if tag != b'Q' {
            return None;
        }
        let directive = key_directive(sql)?;
        if matches!(directive, KeyDirective::Query(_))
            || classify(sql, &self.classifier).statements != 1
        {
            return None;
        }
        self.note_key(&directive);
        let tag = match directive {
            KeyDirective::ResetSession if sql.trim_start().starts_with(['r', 'R']) => "RESET",
            _ => "SET",
        };
        Some(KeyCommand { consumed, tag })
    }

    /// Applies a key directive: the session's key, and this transaction's.
    fn note_key(&mut self, directive: &KeyDirective<'_>) {
        match directive {
            KeyDirective::SetSession(key) => {
                self.session_key = Some(key.as_ref().into());
                self.tx_key = self.session_key.clone();
            }
            KeyDirective::ResetSession => {
                self.session_key = None;
                self.tx_key = None;
            }
            KeyDirective::Query(key) => self.tx_key = Some((*key).into()),
        }
    }

    /// For a replica-routed decision: whether the work at the front of `buf` is one simple
    /// query outside an explicit transaction that can be sent again to the primary after a
    /// 25006 error (`retry_read_only_errors`).
    pub fn retry(&self, buf: &[u8], decision: &Decision) -> Option<Retry> {
        if !decision.replica || !self.settings.retry_read_only_errors {
            return None;
        }
        let (tag, sql, consumed) = front_sql(buf)?;
        if tag != b'Q' || classify(sql, &self.classifier).transaction != TxEffect::None {
            return None;
        }
        Some(Retry {
            query: bytes::Bytes::copy_from_slice(buf.get(..consumed)?),
        })
    }

    /// What the work at the front of `buf` needs: a simple query or Parse is classified; a Bind
    /// of a named statement uses its statement's classification; anything else is a write.
    /// Notes the transaction's consistency key (a comment hint, else the session's): its
    /// commit is recorded under the key, and its reads wait for the key's last commit too.
    pub fn request(&mut self, buf: &[u8], statements: &ClientStatements) -> Request {
        self.tx_key = self.session_key.clone();
        if let (Some(_), Some((_, sql, _))) = (&self.keys, front_sql(buf)) {
            if let Some(directive) = key_directive(sql) {
                self.note_key(&directive);
            }
        }
        if !self.replicas {
            return Request::write();
        }
        let (intent, reason) = match self.intent(buf, statements) {
            Some(decided) => decided,
            None => (Intent::Write, Reason::Write),
        };
        let key_lsn = match (&self.keys, &self.tx_key) {
            (Some(keys), Some(key)) => keys.get(key),
            _ => None,
        };
        Request {
            intent,
            reason,
            min_lsn: match self.settings.read_your_writes {
                ReadYourWrites::Lsn => self.last_write.max(key_lsn),
                _ => None,
            },
            primary_until: self.primary_until,
        }
    }

    fn intent(&mut self, buf: &[u8], statements: &ClientStatements) -> Option<(Intent, Reason)> {
        if buf.first() == Some(&b'B') {
            let body = message_body(buf)?;
            let cstr = |b: &[u8]| b.iter().position(|c| *c == 0);
            let after = body.get(cstr(body)? + 1..)?;
            let name = after.get(..cstr(after)?)?;
            let statement = statements.get(name)?;
            if let Some(decided) = self.prepared.get(&statement.id) {
                return Some(*decided);
            }
            let decided = self.decide(front_sql(statement.parse_message())?.1);
            if self.prepared.len() >= PREPARED_INTENTS {
                self.prepared.clear();
            }
            self.prepared.insert(statement.id, decided);
            return Some(decided);
        }
        Some(self.decide(front_sql(buf)?.1))
    }

    /// The intent of a query string under this client's settings.
    fn decide(&self, sql: &str) -> (Intent, Reason) {
        let classification = classify(sql, &self.classifier);
        router::intent_for(&classification, &self.settings, TxStart::Idle)
    }

    /// Picks the node for `request`; a write waits up to `write_wait` for a usable primary
    /// (a failover in progress) before failing.
    pub async fn route(
        &self,
        generation: &Generation,
        database: &str,
        request: &Request,
    ) -> Result<Decision, RouteError> {
        let no_database = || RouteError::NoPrimary {
            database: database.to_string(),
        };
        let topology = generation.topology.get(database).ok_or_else(no_database)?;
        let deadline = Instant::now() + self.settings.write_wait;
        loop {
            let snapshot = topology.load();
            match router::policy::route(
                database,
                &snapshot,
                &self.settings,
                &self.balancer,
                request,
            ) {
                Err(e) if e.worth_waiting() && Instant::now() < deadline => {
                    tokio::time::sleep(PRIMARY_POLL).await;
                }
                other => return other,
            }
        }
    }

    /// Whether the transaction about to run on `decision`'s node must record the client's write
    /// position when it ends (see [`ClientRouting::tracks`]). If so and it has a consistency
    /// key, announces the write so reads under the key wait until its position is known; the
    /// caller must then end it with [`ClientRouting::wrote`] or [`ClientRouting::abandoned`].
    pub fn start_write(&mut self, decision: &Decision, request: &Request) -> bool {
        if !self.tracks(decision, request) {
            return false;
        }
        if let (Some(keys), Some(key), true) = (&self.keys, &self.tx_key, self.needs_lsn()) {
            keys.begin_write(key);
            self.key_writing = true;
        }
        true
    }

    /// The tracked transaction ended without a known outcome (error, disconnect).
    pub fn abandoned(&mut self) {
        if let (Some(keys), Some(key), true) = (&self.keys, &self.tx_key, self.key_writing) {
            keys.end_write(key, None);
        }
        self.key_writing = false;
    }

    /// Whether a finished transaction on `decision`'s node must record the client's write
    /// position: it ran on the primary as a write and some replica could serve later reads.
    pub fn tracks(&self, decision: &Decision, request: &Request) -> bool {
        self.replicas
            && self.settings.reads == crate::config::routing::ReadRouting::Replicas
            && !decision.replica
            && request.intent == Intent::Write
            && self.settings.read_your_writes != ReadYourWrites::Off
    }

    /// Whether recording a write needs the primary's WAL position (else only the time).
    pub fn needs_lsn(&self) -> bool {
        self.settings.read_your_writes == ReadYourWrites::Lsn
    }

    /// Records a committed write: its WAL position (LSN mode, also under the transaction's
    /// consistency key) and the window's end.
    pub fn wrote(&mut self, lsn: Option<Lsn>) {
        if let Some(lsn) = lsn {
            self.last_write = self.last_write.max(Some(lsn));
        }
        // An unknown position (`Lsn(u64::MAX)` from the session) is not shared: it would keep
        // the key's reads on the primary for good.
        let shared = lsn.filter(|l| l.0 != u64::MAX);
        if let (Some(keys), Some(key), true) = (&self.keys, &self.tx_key, self.key_writing) {
            keys.end_write(key, shared);
        }
        self.key_writing = false;
        if self.settings.read_your_writes == ReadYourWrites::Window {
            self.primary_until = Some(Instant::now() + self.settings.read_your_writes_window);
        }
    }
}

/// The body of the whole message at the front of `buf` (after tag and length).
fn message_body(buf: &[u8]) -> Option<&[u8]> {
    let len = u32::from_be_bytes(buf.get(1..5)?.try_into().ok()?) as usize;
    buf.get(5..len.checked_add(1)?)
}

/// The SQL of a whole simple Query or Parse message at the front of `buf`: its tag, its text
/// and the message's length in bytes.
fn front_sql(buf: &[u8]) -> Option<(u8, &str, usize)> {
    let tag = *buf.first()?;
    let body = message_body(buf)?;
    let cstr = |b: &[u8]| b.iter().position(|c| *c == 0);
    let sql = match tag {
        b'Q' => body.get(..cstr(body)?)?,
        b'P' => {
            let after = body.get(cstr(body)? + 1..)?;
            after.get(..cstr(after)?)?
        }
        _ => return None,
    };
    Some((tag, std::str::from_utf8(sql).ok()?, body.len() + 5))
}

/// The metrics label for a routing decision.
pub(super) fn metric_labels(decision: &Decision) -> (RouteTarget, RouteReason) {
    let target = if decision.replica {
        RouteTarget::Replica
    } else {
        RouteTarget::Primary
    };
    let reason = match decision.reason {
        Reason::Write => RouteReason::Write,
        Reason::Read => RouteReason::Read,
        Reason::TransactionBegin | Reason::ReadOnlyTransaction => RouteReason::Transaction,
        Reason::Hint => RouteReason::Hint,
        Reason::Default | Reason::ReadsOff => RouteReason::Default,
        Reason::ReadYourWrites => RouteReason::ReadYourWrites,
        Reason::ReadNoReplica => RouteReason::Fallback,
        Reason::PrimaryShare => RouteReason::Other,
    };
    (target, reason)
}

#[cfg(test)]
#[path = "tests_routing.rs"]
mod tests;
