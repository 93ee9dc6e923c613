//! Tests of the config module as a whole (example file, defaults, errors, overrides).
use super::*;
#[test]
fn scratch() {
    for t in ["databases:\n  - name: a\n    nodez: []\n", "limits:\n  startup_timeout: 5x\n", "users:\n  - name: a\n    password: 12345\n", "pool:\n  size: -1\n", "pool:\n  mode: foo\n", "a: [\n", "databases:\n  - name: a\n    nodes:\n      - host: x\n        port: 70000\n", "listeners:\n  - address: x\n    extra: 1\n"] {
        match parse_str(t) { Ok(c) => println!("OK {:?}\n", c.users), Err(e) => println!("{e}\n") }
    }
}
