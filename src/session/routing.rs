//! Per-transaction routing of a transaction-pooled client: what the work at the front of its
//! buffer needs (a write, or a read a replica may serve), which node gets it from the live
//! topology, and the client's read-your-writes position (the WAL position of its last commit).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::statements::ClientStatements;
use super::Generation;
use crate::config::routing::ReadYourWrites;
use crate::config::RoutingSettings;
use crate::router::classify::{classify, ClassifierConfig};
use crate::router::{self, Balancer, Decision, Intent, Reason, Request, RouteError, TxStart};
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
}

impl ClientRouting {
    pub fn new(generation: &Generation, database: &str, user: &str) -> Option<ClientRouting> {
        let db = generation.config.database(database)?;
        let (settings, classifier) = generation.routing.get(database, user)?;
        let replicas = db.nodes.len() > 1;
        Some(ClientRouting {
            classifier: classifier.clone(),
            balancer: generation.balancers.get(database)?.clone(),
            settings: settings.clone(),
            replicas,
            last_write: None,
            primary_until: None,
        })
    }

    /// What the work at the front of `buf` needs: a simple query or Parse is classified; a Bind
    /// of a named statement uses its statement's classification; anything else is a write.
    pub fn request(&self, buf: &[u8], statements: &ClientStatements) -> Request {
        if !self.replicas {
            return Request::write();
        }
        let (intent, reason) = match self.intent(buf, statements) {
            Some(decided) => decided,
            None => (Intent::Write, Reason::Write),
        };
        Request {
            intent,
            reason,
            min_lsn: match self.settings.read_your_writes {
                ReadYourWrites::Lsn => self.last_write,
                _ => None,
            },
            primary_until: self.primary_until,
        }
    }

    fn intent(&self, buf: &[u8], statements: &ClientStatements) -> Option<(Intent, Reason)> {
        let (&tag, rest) = buf.split_first()?;
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let body = rest.get(4..len)?;
        let cstr = |b: &[u8]| b.iter().position(|c| *c == 0);
        let sql = match tag {
            b'Q' => &body[..cstr(body)?],
            b'P' => {
                let after = &body[cstr(body)? + 1..];
                &after[..cstr(after)?]
            }
            b'B' => {
                let after = &body[cstr(body)? + 1..];
                let name = &after[..cstr(after)?];
                let statement = statements.get(name)?;
                return Some(if statement.read_only {
                    (Intent::Read, Reason::Read)
                } else {
                    (Intent::Write, Reason::Write)
                });
            }
            _ => return None,
        };
        let classification = classify(std::str::from_utf8(sql).ok()?, &self.classifier);
        Some(router::intent_for(
            &classification,
            &self.settings,
            TxStart::Idle,
        ))
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

    /// Records a committed write: its WAL position (LSN mode) and the window's end.
    pub fn wrote(&mut self, lsn: Option<Lsn>) {
        if let Some(lsn) = lsn {
            self.last_write = self.last_write.max(Some(lsn));
        }
        if self.settings.read_your_writes == ReadYourWrites::Window {
            self.primary_until = Some(Instant::now() + self.settings.read_your_writes_window);
        }
    }
}
