//! `reachy bus`: talk Dynamixel 2.0 directly through a serial adapter, with the firmware crate's
//! codec. Output is JSON on stdout.

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use reachy_firmware::dynamixel::control_table::{self, Model};
use reachy_firmware::dynamixel::{Master, PingInfo};
use serde_json::json;

use reachy_daemon::serial::{SerialIo, StdClock};

/// `reachy bus …`
#[derive(Debug, Subcommand)]
pub enum BusCommand {
    /// Find servos: prints a JSON list of {id, model, model_name, firmware}.
    Scan {
        /// Serial port.
        #[command(flatten)]
        port: PortArgs,
        /// IDs to ping one by one, e.g. `1-20` or `1,3,7-9`; default: one broadcast ping.
        #[arg(long)]
        ids: Option<String>,
    },
    /// Read one register, e.g. `--reg present_position`.
    Read {
        /// Serial port.
        #[command(flatten)]
        port: PortArgs,
        /// Servo ID.
        #[arg(long)]
        id: u8,
        /// Register name (snake_case, as in the control table; `reachy bus registers` lists them).
        #[arg(long)]
        reg: String,
        /// Convert to SI units (rad, rad/s, A, °C, V).
        #[arg(long)]
        si: bool,
    },
    /// Write one register, e.g. `--reg goal_position --value 2048`.
    Write {
        /// Serial port.
        #[command(flatten)]
        port: PortArgs,
        /// Servo ID.
        #[arg(long)]
        id: u8,
        /// Register name.
        #[arg(long)]
        reg: String,
        /// Value: raw by default, SI with `--si`.
        #[arg(long, allow_hyphen_values = true)]
        value: f64,
        /// The value is in SI units.
        #[arg(long)]
        si: bool,
    },
    /// List the control table: name, address, size, area, unit.
    Registers,
}

/// Serial port options.
#[derive(Debug, Args)]
pub struct PortArgs {
    /// Serial device (a USB adapter such as /dev/ttyUSB0, or a pty from `reachy sim servos`).
    #[arg(long)]
    pub port: String,
    /// Baud rate.
    #[arg(long, default_value_t = 1_000_000)]
    pub baud: u32,
    /// Reply timeout in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub timeout_ms: u32,
}

/// Parse an ID list like `1-6,9,12-13`.
pub fn parse_ids(s: &str) -> anyhow::Result<Vec<u8>> {
    let mut ids = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let a: u8 = a
            .parse()
            .with_context(|| format!("bad ID `{a}` in `{s}`"))?;
        let b: u8 = b
            .parse()
            .with_context(|| format!("bad ID `{b}` in `{s}`"))?;
        if a > b || b > 252 {
            bail!("bad ID range `{part}` (IDs are 0-252, low-high)");
        }
        ids.extend(a..=b);
    }
    if ids.is_empty() {
        bail!("empty ID list `{s}`");
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

fn open(p: &PortArgs) -> anyhow::Result<Master<SerialIo, StdClock>> {
    reachy_daemon::serial::open_master(&p.port, p.baud, p.timeout_ms)
        .with_context(|| format!("cannot open {}", p.port))
}

fn register(name: &str) -> anyhow::Result<&'static control_table::Register> {
    control_table::by_name(name).ok_or_else(|| {
        let names: Vec<&str> = control_table::registers().map(|r| r.name).collect();
        anyhow!("unknown register `{name}`; known: {}", names.join(", "))
    })
}

fn model_of(m: &mut Master<SerialIo, StdClock>, id: u8) -> anyhow::Result<Model> {
    let p = m.ping(id)?;
    Model::from_number(p.model)
        .ok_or_else(|| anyhow!("servo {id}: unknown model number {}", p.model))
}

fn ping_json(p: &PingInfo) -> serde_json::Value {
    json!({
        "id": p.id,
        "model": p.model,
        "model_name": Model::from_number(p.model).map(|m| m.name()),
        "firmware": p.firmware,
    })
}

/// Run a `bus` subcommand.
pub fn run(cmd: BusCommand) -> anyhow::Result<()> {
    match cmd {
        BusCommand::Registers => {
            let regs: Vec<_> = control_table::registers()
                .map(|r| {
                    json!({"name": r.name, "addr": r.addr, "size": r.size,
                           "area": if r.eeprom {"eeprom"} else {"ram"},
                           "writable": r.writable, "unit": r.unit.symbol()})
                })
                .collect();
            println!("{}", serde_json::Value::Array(regs));
        }
        BusCommand::Scan { port, ids } => {
            let mut m = open(&port)?;
            let asked = match &ids {
                Some(s) => format!("IDs {s}"),
                None => "a broadcast ping (every ID)".into(),
            };
            let found: Vec<serde_json::Value> = match ids {
                Some(s) => {
                    let ids = parse_ids(&s)?;
                    m.retries = 0;
                    ids.iter()
                        .filter_map(|&id| m.ping(id).ok())
                        .map(|p| ping_json(&p))
                        .collect()
                }
                None => {
                    let mut out = [PingInfo::default(); 253];
                    let n = m
                        .broadcast_ping(&mut out)
                        .map_err(|e| anyhow!("broadcast ping: {e}"))?;
                    out[..n].iter().map(ping_json).collect()
                }
            };
            if found.is_empty() {
                bail!(
                    "no servo answered on {} at {} baud ({asked}, {} ms reply timeout): check the \
                     power, the wiring and the baud rate (factory servos are at 57600), or give \
                     --ids",
                    port.port,
                    port.baud,
                    port.timeout_ms
                );
            }
            println!("{}", serde_json::Value::Array(found));
        }
        BusCommand::Read { port, id, reg, si } => {
            let r = register(&reg)?;
            let mut m = open(&port)?;
            let mut buf = [0u8; 4];
            m.read(id, r.addr, &mut buf[..r.size as usize])?;
            let raw = r.decode(&buf).unwrap_or(0);
            if si {
                let model = model_of(&mut m, id)?;
                println!(
                    "{}",
                    json!({"id": id, "reg": r.name, "raw": raw, "value": r.to_si(raw, model), "unit": r.unit.symbol()})
                );
            } else {
                println!("{}", json!({"id": id, "reg": r.name, "raw": raw}));
            }
        }
        BusCommand::Write {
            port,
            id,
            reg,
            value,
            si,
        } => {
            let r = register(&reg)?;
            if !r.writable {
                bail!("register `{}` is read-only", r.name);
            }
            if !value.is_finite() {
                bail!("value must be a finite number");
            }
            let mut m = open(&port)?;
            let raw = if si {
                let model = model_of(&mut m, id)?;
                r.from_si(value, model)
            } else {
                if value.fract() != 0.0 {
                    bail!("raw values are integers (use --si for units)");
                }
                value as i64
            };
            let mut buf = [0u8; 4];
            let n = r.encode(raw, &mut buf).ok_or_else(|| {
                anyhow!(
                    "value {raw} does not fit the {}-byte register `{}`",
                    r.size,
                    r.name
                )
            })?;
            m.write(id, r.addr, &buf[..n])?;
            println!(
                "{}",
                json!({"id": id, "reg": r.name, "raw": raw, "ok": true})
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_lists() {
        assert_eq!(parse_ids("1-3,7").unwrap(), vec![1, 2, 3, 7]);
        assert_eq!(parse_ids("5").unwrap(), vec![5]);
        assert!(parse_ids("3-1").is_err());
        assert!(parse_ids("1-300").is_err());
        assert!(parse_ids("x").is_err());
        assert!(parse_ids("").is_err());
    }
}
