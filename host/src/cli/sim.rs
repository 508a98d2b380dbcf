//! `reachy sim …`: simulation services.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use clap::Subcommand;
use reachy_firmware::dynamixel::Model;
use reachy_sim::servo_pty::{self, PtyEndpoint};
use reachy_sim::SimBus;

/// `reachy sim …`
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Simulated Dynamixel servos on a pseudo-terminal: creates a symlink at --pty that any
    /// Dynamixel 2.0 client (ROBOTIS SDK, `reachy bus`, the firmware) opens as a serial port.
    /// Runs until interrupted.
    Servos {
        /// Where to create the symlink to the pty, e.g. /tmp/reachy-bus.
        #[arg(long)]
        pty: PathBuf,
        /// Servo IDs, e.g. `1-6` or `1,2,5`.
        #[arg(long, default_value = "1-6")]
        ids: String,
        /// Servo model: xm430-w350, xm430-w210, xl330-m288.
        #[arg(long, default_value = "xm430-w350")]
        model: String,
        /// Drop this fraction of replies (fault injection).
        #[arg(long, default_value_t = 0.0)]
        drop_rate: f32,
        /// IDs that never answer (fault injection), e.g. `3`.
        #[arg(long)]
        dead: Option<String>,
    },
}

/// Run a `sim` subcommand.
pub fn run(cmd: SimCommand) -> anyhow::Result<()> {
    match cmd {
        SimCommand::Servos {
            pty,
            ids,
            model,
            drop_rate,
            dead,
        } => {
            let ids = super::bus::parse_ids(&ids)?;
            let model = Model::from_name(&model).ok_or_else(|| {
                anyhow!("unknown model `{model}` (xm430-w350, xm430-w210, xl330-m288)")
            })?;
            if !(0.0..=1.0).contains(&drop_rate) {
                return Err(anyhow!("--drop-rate must be within 0..1"));
            }
            let mut bus = SimBus::new(&ids, model);
            for s in &mut bus.servos {
                s.faults.drop_rate = drop_rate;
            }
            if let Some(d) = dead {
                for id in super::bus::parse_ids(&d)? {
                    if let Some(s) = bus.servo_mut(id) {
                        s.faults.dead = true;
                    }
                }
            }
            let mut ep = PtyEndpoint::create(&pty).context("starting the simulated bus")?;
            let stop = Arc::new(AtomicBool::new(false));
            let s2 = stop.clone();
            ctrlc::set_handler(move || s2.store(true, std::sync::atomic::Ordering::Relaxed))
                .context("installing the Ctrl-C handler")?;
            tracing::info!(pty = %pty.display(), ?ids, model = model.name(), "simulated servos ready");
            servo_pty::serve(&mut bus, &mut ep, &stop)?;
            Ok(())
        }
    }
}
