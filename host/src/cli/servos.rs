//! `reachy servos setup|calibrate`: new servos given their place in the URDF's servo map, and
//! their mounting recorded into the config ([`reachy_apps::servos`] says how).

use std::io::{BufRead, Write};

use anyhow::{bail, Context};
use reachy_apps::servos;

/// `reachy servos …`
#[derive(Debug, clap::Subcommand)]
pub enum ServosCommand {
    /// Connect one servo at a time: each gets the ID and baud rate the servo map gives its
    /// joint, no return delay and the URDF's limits, and is read back (like
    /// `lerobot-setup-motors`). Factory servos (ID 1 at 57 600 baud) are found at any ID and
    /// baud rate.
    Setup(ServosArgs),
    /// Record each joint's zero offset and direction (held at zero, then moved a little its
    /// positive way) into the config's `[servos]` table, which the serial and dynamixel
    /// backends use.
    Calibrate(ServosArgs),
}

/// What both take.
#[derive(Debug, clap::Args)]
pub struct ServosArgs {
    /// The robot description (`--urdf FILE`).
    #[command(flatten)]
    pub urdf: super::args::UrdfArgs,
    /// The adapter, e.g. /dev/ttyUSB0.
    #[arg(long)]
    pub port: String,
    /// The servo map's bus: r_arm, l_arm, head.
    #[arg(long)]
    pub bus: String,
    /// The bus's baud rate (setup: what the servos are set to).
    #[arg(long, default_value_t = 1_000_000)]
    pub baud: u32,
    /// Only these joints (comma-separated), in this order; default: the bus's, in servo-map
    /// order.
    #[arg(long, value_delimiter = ',')]
    pub joints: Vec<String>,
    /// The TOML config: setup reads the mountings from its `[servos]`; calibrate writes them
    /// there (created if missing).
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
}

fn prompt(m: &str) {
    eprintln!("{m}");
    std::io::stderr().flush().ok();
}

/// Run `reachy servos …`.
pub fn run(cmd: ServosCommand) -> anyhow::Result<()> {
    let (calibrate, a) = match cmd {
        ServosCommand::Setup(a) => (false, a),
        ServosCommand::Calibrate(a) => (true, a),
    };
    let (_, model) = reachy_kinematics::model::RobotModel::load(a.urdf.path())?;
    let map: Vec<(String, u8)> = model
        .servo_map()
        .into_iter()
        .filter(|s| s.bus == a.bus && !s.joint.ends_with("_mimic"))
        .map(|s| (s.joint, s.id))
        .collect();
    if map.is_empty() {
        let chains: Vec<&str> = model.chains.iter().map(|c| c.name()).collect();
        bail!(
            "no servo bus `{}` in the servo map (known: {})",
            a.bus,
            chains.join(", ")
        );
    }
    let joints: Vec<(String, u8)> = if a.joints.is_empty() {
        map
    } else {
        a.joints
            .iter()
            .map(|j| {
                map.iter().find(|(n, _)| n == j).cloned().ok_or_else(|| {
                    let known: Vec<&str> = map.iter().map(|(n, _)| n.as_str()).collect();
                    anyhow::anyhow!(
                        "joint `{j}` is not on bus {} (its joints: {})",
                        a.bus,
                        known.join(", ")
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let cfg = match &a.config {
        Some(p) if p.exists() => reachy_daemon::config::Config::load(p)?,
        _ => reachy_daemon::config::Config::default_config(),
    };
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    if calibrate {
        let Some(path) = &a.config else {
            bail!("servos calibrate needs --config FILE: the config the daemon will read");
        };
        let mut master = reachy_daemon::serial::open_master(&a.port, a.baud, 20)
            .with_context(|| format!("opening {}", a.port))?;
        let mut mounts = Vec::new();
        for (joint, id) in &joints {
            let m =
                servos::calibrate_joint(&mut master, joint, *id, &mut input, &mut |m| prompt(m))?;
            println!(
                "{}",
                serde_json::json!({"joint": joint, "id": id, "offset": m.offset, "direction": m.direction})
            );
            mounts.push((joint.clone(), m));
        }
        servos::write_mounts(path, &mounts)?;
        prompt(&format!(
            "mountings written to [servos] in {}",
            path.display()
        ));
        return Ok(());
    }
    for (joint, id) in &joints {
        let info = model
            .joints
            .iter()
            .find(|j| j.name == *joint)
            .ok_or_else(|| anyhow::anyhow!("no joint {joint} in the URDF"))?;
        let t =
            servos::Target {
                joint: joint.clone(),
                id: *id,
                baud: a.baud,
                lower: info.lower as f32,
                upper: info.upper as f32,
                mount: cfg.servos.get(joint).copied().unwrap_or(
                    reachy_daemon::config::ServoMount {
                        offset: 0.0,
                        direction: 1,
                    },
                ),
            };
        loop {
            prompt(&format!(
                "connect only the servo of {joint} (it becomes ID {id} at {} baud), then press Enter",
                a.baud
            ));
            let mut line = String::new();
            if input.read_line(&mut line)? == 0 {
                bail!("the input ended before {joint} was set up");
            }
            match servos::setup_one(&a.port, &t) {
                Ok(r) => {
                    println!("{}", serde_json::to_string(&r)?);
                    break;
                }
                // nothing, or several, on the bus: say so and ask again
                Err(
                    e @ (servos::SetupError::NoServo { .. }
                    | servos::SetupError::SeveralServos { .. }),
                ) => prompt(&format!("{e}; try again")),
                Err(e) => return Err(e.into()),
            }
        }
    }
    prompt(&format!(
        "{} servo(s) set up on bus {}",
        joints.len(),
        a.bus
    ));
    Ok(())
}
