//! The daemon's TOML configuration (`config/reachy.toml` is the documented default, built in).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// A configuration that cannot be read or is not acceptable (names the file and the key).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        let holds: bool = $cond;
        if !holds {
            return Err(ConfigError(format!($($fmt)+)));
        }
    };
}

/// The built-in default configuration (`config/reachy.toml`).
pub const DEFAULT_CONFIG: &str = include_str!("../../../config/reachy.toml");

/// `reachy daemon` settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Robot name.
    #[serde(default = "default_robot")]
    pub robot: String,
    /// `sim` or `serial`.
    #[serde(default = "default_backend")]
    pub backend: String,
    /// Control rate (Hz).
    #[serde(default = "default_rate")]
    pub rate_hz: f64,
    /// Stream timeout (s).
    #[serde(default = "default_stream")]
    pub stream_timeout_s: f64,
    /// Lease timeout (s).
    #[serde(default = "default_lease")]
    pub lease_timeout_s: f64,
    /// Serial backend.
    #[serde(default)]
    pub serial: SerialConfig,
    /// Acceleration limit of every joint (rad/s²); absent: none. `[limits]` can set one per joint.
    #[serde(default)]
    pub max_acceleration: Option<f32>,
    /// Per-joint limits tighter than the URDF's.
    #[serde(default)]
    pub limits: BTreeMap<String, LimitOverride>,
    /// Servo mounting (serial backend).
    #[serde(default)]
    pub servos: BTreeMap<String, ServoMount>,
    /// `reachy teleop`'s devices.
    #[serde(default)]
    pub teleop: TeleopConfig,
}

/// `[teleop]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeleopConfig {
    /// `[teleop.gamepad]`: which control does what.
    #[serde(default)]
    pub gamepad: GamepadMapping,
}

/// `[teleop.gamepad]`: gilrs' control names (`LeftStickX`, `RightTrigger2`, `South`, …); a `-`
/// in front inverts an axis.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GamepadMapping {
    /// Forward / back.
    pub x: String,
    /// Left / right.
    pub y: String,
    /// Up / down.
    pub z: String,
    /// Rotation about the TCP's z axis.
    pub yaw: String,
    /// Closes the gripper (an analog trigger: the further, the faster).
    pub close: String,
    /// Opens it.
    pub open: String,
    /// Motion only while held.
    pub deadman: String,
    /// Next part (r_arm → l_arm → head).
    pub switch: String,
    /// The arm home.
    pub home: String,
    /// Quit, holding the pose.
    pub quit: String,
    /// Stick values below this count as 0.
    pub deadzone: f32,
}

impl Default for GamepadMapping {
    fn default() -> Self {
        let s = |v: &str| v.to_string();
        Self {
            x: s("LeftStickY"),
            y: s("-LeftStickX"),
            z: s("RightStickY"),
            yaw: s("-RightStickX"),
            close: s("RightTrigger2"),
            open: s("LeftTrigger2"),
            deadman: s("LeftTrigger"),
            switch: s("North"),
            home: s("Start"),
            quit: s("Select"),
            deadzone: 0.1,
        }
    }
}

/// `[serial]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialConfig {
    /// Host link path.
    #[serde(default = "default_link")]
    pub link: String,
    /// Baud rate.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Servo bus.
    #[serde(default = "default_bus")]
    pub bus: String,
}

impl Default for SerialConfig {
    fn default() -> Self {
        Self {
            link: default_link(),
            baud: default_baud(),
            bus: default_bus(),
        }
    }
}

/// `[limits] joint = { lower, upper, velocity, acceleration, effort }` (each optional).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverride {
    /// Lower position limit (rad).
    pub lower: Option<f32>,
    /// Upper position limit (rad).
    pub upper: Option<f32>,
    /// Velocity limit (rad/s).
    pub velocity: Option<f32>,
    /// Acceleration limit (rad/s²).
    #[serde(default)]
    pub acceleration: Option<f32>,
    /// Effort limit, in the backend's effort unit (the sim: N·m; the serial backend: the
    /// servo's current, A). A joint that pushes beyond it for 50 ms yields where it is.
    #[serde(default)]
    pub effort: Option<f32>,
}

/// `[servos] joint = { offset, direction }`
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServoMount {
    /// Joint position at servo position 0 (rad).
    #[serde(default)]
    pub offset: f32,
    /// 1 or -1.
    #[serde(default = "one")]
    pub direction: i8,
}

fn default_robot() -> String {
    "reachy".into()
}
fn default_backend() -> String {
    "sim".into()
}
fn default_rate() -> f64 {
    100.0
}
fn default_stream() -> f64 {
    0.5
}
fn default_lease() -> f64 {
    2.0
}
fn default_link() -> String {
    "/dev/ttyACM0".into()
}
fn default_baud() -> u32 {
    1_000_000
}
fn default_bus() -> String {
    "r_arm".into()
}
fn one() -> i8 {
    1
}

impl Config {
    /// Parse and check a configuration (`what` names it in errors).
    pub fn parse(text: &str, what: &str) -> Result<Self, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| ConfigError(format!("{what}: {e}")))?;
        ensure!(
            matches!(c.backend.as_str(), "sim" | "serial"),
            "{what}: backend `{}`: sim or serial",
            c.backend
        );
        ensure!(
            c.rate_hz >= 1.0 && c.rate_hz <= 1000.0,
            "{what}: rate_hz {} is not within 1..=1000",
            c.rate_hz
        );
        ensure!(
            c.stream_timeout_s > 0.0 && c.lease_timeout_s > 0.0,
            "{what}: timeouts must be positive"
        );
        for (j, m) in &c.servos {
            ensure!(
                m.direction == 1 || m.direction == -1,
                "{what}: servos.{j}.direction must be 1 or -1"
            );
            ensure!(
                m.offset.is_finite(),
                "{what}: servos.{j}.offset is not finite"
            );
        }
        for (j, l) in &c.limits {
            for v in [l.lower, l.upper, l.velocity, l.effort]
                .into_iter()
                .flatten()
            {
                ensure!(v.is_finite(), "{what}: limits.{j} has a non-finite value");
            }
            if let Some(v) = l.velocity {
                ensure!(v > 0.0, "{what}: limits.{j}.velocity must be positive");
            }
            if let Some(a) = l.acceleration {
                ensure!(a > 0.0, "{what}: limits.{j}.acceleration must be positive");
            }
            if let Some(e) = l.effort {
                ensure!(e > 0.0, "{what}: limits.{j}.effort must be positive");
            }
        }
        if let Some(a) = c.max_acceleration {
            ensure!(a > 0.0, "{what}: max_acceleration must be positive");
        }
        Ok(c)
    }

    /// The built-in default.
    pub fn default_config() -> Self {
        Self::parse(DEFAULT_CONFIG, "config/reachy.toml").expect("the shipped config parses")
    }

    /// Read a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("reading {}: {e}", path.display())))?;
        Self::parse(&text, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_parses_with_the_documented_defaults() {
        let c = Config::default_config();
        assert_eq!(c.robot, "reachy");
        assert_eq!(c.backend, "sim");
        assert_eq!(c.rate_hz, 100.0);
        assert_eq!(c.serial.bus, "r_arm");
        assert!(c.limits.is_empty() && c.servos.is_empty());
        assert_eq!(c.teleop.gamepad, GamepadMapping::default());
        assert_eq!(c.max_acceleration, Some(30.0));
    }

    #[test]
    fn overrides_parse_and_bad_files_are_clear_errors() {
        let c = Config::parse(
            "robot = \"r2\"\nbackend = \"serial\"\n[limits]\nr_elbow_pitch = { lower = -2.0, velocity = 1.5 }\n[servos]\nr_shoulder_pitch = { offset = 0.1, direction = -1 }\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.robot, "r2");
        assert_eq!(c.limits["r_elbow_pitch"].velocity, Some(1.5));
        assert_eq!(c.servos["r_shoulder_pitch"].direction, -1);
        for bad in [
            "backend = \"ros\"",
            "rate_hz = 0",
            "unknown_key = 1",
            "[servos]\nx = { direction = 2 }",
            "[limits]\nx = { velocity = -1.0 }",
            "[limits]\nx = { acceleration = 0.0 }",
            "[limits]\nx = { effort = -2.0 }",
            "max_acceleration = -3.0",
            "robot = ",
        ] {
            let e = Config::parse(bad, "t").unwrap_err().to_string();
            assert!(e.starts_with("t:"), "{bad}: {e}");
        }
    }
}
