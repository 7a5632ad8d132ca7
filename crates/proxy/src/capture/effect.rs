//! What a set of iptables commands does, independent of how it is written.
//!
//! Two rule sets are equivalent when, table by table, they create the same
//! chains and leave the same rules in each chain in the same order. Rules are
//! compared by their match and target clauses regardless of clause order,
//! spelling (`--destination` / `-d`, `--to-port` / `--to-ports`), implicit
//! protocol modules (`-m tcp`) or a missing `/32`. This is how the capture
//! rules are compared with Istio's, and how installed rules are recognised
//! in `iptables-save` output when cleaning up.

use std::collections::{BTreeMap, BTreeSet};

/// One command of an `iptables-restore` input (or of `iptables-save` output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `-N CHAIN` or `:CHAIN POLICY [x:y]`.
    Declare(String),
    /// `-A CHAIN spec...`
    Append { chain: String, spec: Vec<String> },
    /// `-I CHAIN [pos] spec...` (1-based position, default 1).
    Insert {
        chain: String,
        pos: usize,
        spec: Vec<String>,
    },
}

/// One `*table` ... `COMMIT` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub table: String,
    pub commands: Vec<Command>,
}

/// Parses `iptables-restore` input, `iptables-save` output, or a capture
/// golden file (which also holds the names of the commands run, ignored
/// here). Lines outside a table block are ignored.
pub fn parse_blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(table) = line.strip_prefix('*') {
            if let Some(b) = current.take() {
                blocks.push(b);
            }
            current = Some(Block {
                table: table.trim().to_string(),
                commands: Vec::new(),
            });
            continue;
        }
        let Some(block) = current.as_mut() else {
            continue;
        };
        if line == "COMMIT" {
            if let Some(b) = current.take() {
                blocks.push(b);
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix(':') {
            if let Some(name) = rest.split_whitespace().next() {
                block.commands.push(Command::Declare(name.to_string()));
            }
            continue;
        }
        let tokens: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        match tokens.as_slice() {
            [op, chain] if op == "-N" => block.commands.push(Command::Declare(chain.clone())),
            [op, chain, rest @ ..] if op == "-A" => block.commands.push(Command::Append {
                chain: chain.clone(),
                spec: rest.to_vec(),
            }),
            [op, chain, rest @ ..] if op == "-I" => {
                let (pos, spec) = match rest.first().and_then(|p| p.parse::<usize>().ok()) {
                    Some(p) => (p, rest[1..].to_vec()),
                    None => (1, rest.to_vec()),
                };
                block.commands.push(Command::Insert {
                    chain: chain.clone(),
                    pos,
                    spec,
                });
            }
            _ => {}
        }
    }
    if let Some(b) = current.take() {
        blocks.push(b);
    }
    blocks
}

/// Splits blocks into the IPv4 and IPv6 halves of a capture golden file:
/// IPv6 starts where a table repeats.
pub fn split_families(blocks: Vec<Block>) -> (Vec<Block>, Vec<Block>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let mut seen = BTreeSet::new();
    let mut in_v6 = false;
    for b in blocks {
        if !in_v6 && !seen.insert(b.table.clone()) {
            in_v6 = true;
        }
        if in_v6 {
            v6.push(b);
        } else {
            v4.push(b);
        }
    }
    (v4, v6)
}

/// A rule reduced to its meaning: sorted clauses.
pub type NormalRule = Vec<String>;

/// The tables' end state: per table, the chains created and each chain's
/// rules in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effect {
    pub tables: BTreeMap<String, TableEffect>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableEffect {
    pub chains: BTreeSet<String>,
    pub rules: BTreeMap<String, Vec<NormalRule>>,
}

impl Effect {
    /// Applies the commands of `blocks` to empty tables.
    pub fn of(blocks: &[Block]) -> Effect {
        let mut out = Effect::default();
        for b in blocks {
            let t = out.tables.entry(b.table.clone()).or_default();
            for c in &b.commands {
                match c {
                    Command::Declare(name) => {
                        t.chains.insert(name.clone());
                    }
                    Command::Append { chain, spec } => {
                        t.rules
                            .entry(chain.clone())
                            .or_default()
                            .push(normalize(spec));
                    }
                    Command::Insert { chain, pos, spec } => {
                        let rules = t.rules.entry(chain.clone()).or_default();
                        let at = pos.saturating_sub(1).min(rules.len());
                        rules.insert(at, normalize(spec));
                    }
                }
            }
        }
        out
    }

    /// A line per difference, empty when equivalent.
    pub fn diff(&self, other: &Effect) -> Vec<String> {
        let mut out = Vec::new();
        let names: BTreeSet<&String> = self.tables.keys().chain(other.tables.keys()).collect();
        let empty = TableEffect::default();
        for name in names {
            let a = self.tables.get(name).unwrap_or(&empty);
            let b = other.tables.get(name).unwrap_or(&empty);
            if a.chains != b.chains {
                out.push(format!(
                    "table {name}: chains {:?} vs {:?}",
                    a.chains, b.chains
                ));
            }
            let chains: BTreeSet<&String> = a.rules.keys().chain(b.rules.keys()).collect();
            for chain in chains {
                let ra = a.rules.get(chain).map(Vec::as_slice).unwrap_or(&[]);
                let rb = b.rules.get(chain).map(Vec::as_slice).unwrap_or(&[]);
                if ra != rb {
                    out.push(format!(
                        "table {name} chain {chain}:\n  left:  {}\n  right: {}",
                        render(ra),
                        render(rb)
                    ));
                }
            }
        }
        out
    }
}

fn render(rules: &[NormalRule]) -> String {
    let lines: Vec<String> = rules.iter().map(|r| format!("[{}]", r.join(" "))).collect();
    lines.join("\n         ")
}

/// Reduces a rule spec (everything after the chain name) to sorted clauses:
/// `[!] option args...`, with `-m <module>` dropped (each option already
/// names what it matches) and spellings unified.
pub fn normalize(spec: &[String]) -> NormalRule {
    let mut clauses: Vec<Vec<String>> = Vec::new();
    let mut negate = false;
    let mut i = 0;
    while i < spec.len() {
        let tok = spec[i].as_str();
        if tok == "!" {
            negate = true;
            i += 1;
            continue;
        }
        if tok.starts_with('-') {
            let name = canonical_option(tok);
            let mut clause = Vec::new();
            if negate {
                clause.push("!".to_string());
                negate = false;
            }
            clause.push(name.to_string());
            i += 1;
            while i < spec.len() && !spec[i].starts_with('-') && spec[i] != "!" {
                clause.push(spec[i].clone());
                i += 1;
            }
            if name == "-m" {
                // Module loads carry no meaning of their own.
                continue;
            }
            if matches!(name, "-s" | "-d") {
                // iptables keeps the network part only: 127.0.0.1/8 is 127.0.0.0/8.
                for arg in clause.iter_mut().skip(1) {
                    if let Some(c) = super::parse_cidr(arg) {
                        *arg = c.to_string();
                    }
                }
            }
            clauses.push(clause);
        } else {
            // A stray argument: keep it so that it is not silently lost.
            clauses.push(vec![tok.to_string()]);
            i += 1;
        }
    }
    let mut out: Vec<String> = clauses.into_iter().map(|c| c.join(" ")).collect();
    out.sort();
    out
}

fn canonical_option(opt: &str) -> &str {
    match opt {
        "--protocol" => "-p",
        "--source" | "--src" => "-s",
        "--destination" | "--dst" => "-d",
        "--in-interface" => "-i",
        "--out-interface" => "-o",
        "--jump" => "-j",
        "--goto" => "-g",
        "--match" => "-m",
        "--destination-port" => "--dport",
        "--source-port" => "--sport",
        "--destination-ports" => "--dports",
        "--source-ports" => "--sports",
        "--to-port" => "--to-ports",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn normalization_ignores_spelling_and_order() {
        let a = normalize(&toks(
            "-o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
        ));
        let b = normalize(&toks(
            "! -d 127.0.0.1 -o lo -p tcp -m tcp ! --destination-port 15008 -m owner --uid-owner 1337 --jump ISTIO_IN_REDIRECT",
        ));
        assert_eq!(a, b);
        assert_ne!(
            normalize(&toks("-o lo -m owner ! --uid-owner 1337 -j RETURN")),
            normalize(&toks("-o lo -m owner --uid-owner 1337 -j RETURN"))
        );
        assert_eq!(
            normalize(&toks("! -d 127.0.0.1/8 -j RETURN")),
            normalize(&toks("! -d 127.0.0.0/8 -j RETURN"))
        );
        assert_eq!(
            normalize(&toks("-p udp --dport 53 -j REDIRECT --to-port 15053")),
            normalize(&toks(
                "-p udp -m udp --dport 53 -j REDIRECT --to-ports 15053"
            ))
        );
    }

    #[test]
    fn effect_applies_inserts_and_splits_families() {
        let text = "iptables-save\n* nat\n-N ISTIO_REDIRECT\n-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001\n-A PREROUTING -i eth0 -j RETURN\n-I PREROUTING 1 -i eth1 -j ISTIO_REDIRECT\nCOMMIT\n*nat\n:ISTIO_REDIRECT - [0:0]\nCOMMIT\n";
        let (v4, v6) = split_families(parse_blocks(text));
        assert_eq!((v4.len(), v6.len()), (1, 1));
        let e = Effect::of(&v4);
        let nat = &e.tables["nat"];
        assert!(nat.chains.contains("ISTIO_REDIRECT"));
        assert_eq!(
            nat.rules["PREROUTING"][0],
            normalize(&toks("-i eth1 -j ISTIO_REDIRECT"))
        );
        assert_eq!(
            nat.rules["PREROUTING"][1],
            normalize(&toks("-i eth0 -j RETURN"))
        );
        let e6 = Effect::of(&v6);
        assert!(e.diff(&e6).len() >= 2);
        assert!(e.diff(&e).is_empty());
    }
}
