//! `pgsluice demo`: a throwaway local primary + replicas with pgsluice in front, for trying it out.

use anyhow::Context;

use super::{init_logging, runtime, serve_with_signals};
use crate::app::App;
use crate::config::{self, Config};
use crate::devcluster::{roles, ClusterSpec, DevCluster};

/// Starts the cluster and the proxy, prints the URL to use, and stops everything on Ctrl-C.
pub fn demo(port: u16, replicas: usize) -> anyhow::Result<()> {
    init_logging(&Config::default());
    eprintln!("pgsluice demo: starting a throwaway primary and {replicas} replica(s)...");
    let spec = ClusterSpec {
        replicas,
        ..ClusterSpec::default()
    };
    let cluster = DevCluster::start(&spec).context("starting the local Postgres cluster")?;
    let yaml = demo_yaml(&cluster, port);
    let config = config::load_str(&yaml, &|name| std::env::var(name).ok())
        .context("building the demo configuration")?;
    let runtime = runtime(&config)?;
    let nodes: Vec<(String, u16)> = cluster
        .nodes()
        .iter()
        .map(|node| (node.name.clone(), node.port))
        .collect();
    let result = runtime.block_on(async move {
        let listeners = App::bind(&config).await?;
        let address = listeners[0].local_addr()?;
        let app = App::new(config)?;
        println!();
        println!("pgsluice is listening on {address}, in front of:");
        for (name, port) in &nodes {
            println!("  {name} on 127.0.0.1:{port}");
        }
        println!();
        println!(
            "DATABASE_URL=postgres://demo:demo@127.0.0.1:{}/demo",
            address.port()
        );
        println!(
            "try:  psql \"postgres://demo:demo@127.0.0.1:{}/demo\"",
            address.port()
        );
        println!("Ctrl-C stops pgsluice and the cluster.");
        serve_with_signals(&app, listeners, None).await
    });
    drop(cluster);
    result
}

/// The demo's config: user `demo`/`demo` (SCRAM) mapped to the cluster's test role.
fn demo_yaml(cluster: &DevCluster, port: u16) -> String {
    let mut nodes = String::new();
    let primary = cluster.primary();
    nodes.push_str(&format!(
        "      - {{ name: {}, host: 127.0.0.1, port: {}, role: primary }}\n",
        primary.name, primary.port
    ));
    for replica in cluster.replicas() {
        nodes.push_str(&format!(
            "      - {{ name: {}, host: 127.0.0.1, port: {}, role: replica }}\n",
            replica.name, replica.port
        ));
    }
    format!(
        "listeners: [{{ address: \"127.0.0.1:{port}\" }}]
users:
  - name: demo
    password: demo
    server_user: {user}
    server_password: {password}
databases:
  - name: demo
    server_database: {database}
    nodes:
{nodes}",
        user = roles::SCRAM_USER,
        password = roles::SCRAM_PASSWORD,
        database = roles::DATABASE,
    )
}
