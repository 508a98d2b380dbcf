//! Gamepad teleoperation through `gilrs` (evdev on Linux), behind [`PadSource`] so tests inject
//! events. The default mapping (`[teleop.gamepad]` in the TOML config changes it): left stick
//! x/y, right stick z and yaw, the triggers close / open the gripper, the left shoulder button
//! is the dead-man (motion only while it is held), North switches arms, Start homes, Select
//! quits.

use std::collections::BTreeMap;
use std::time::Instant;

use reachy_daemon::config::GamepadMapping;

use super::jog::{Device, DeviceError, Gripper, Intent};

/// A control's name, as gilrs (and the TOML mapping) spells it: `LeftStickX`, `RightTrigger2`,
/// `South`, …
pub type Control = String;

/// One input change.
#[derive(Debug, Clone, PartialEq)]
pub enum PadInput {
    /// A stick or analog trigger moved to this value (sticks −1..1, triggers 0..1).
    Axis(Control, f32),
    /// A button went down (true) or up.
    Button(Control, bool),
    /// The pad was unplugged.
    Disconnected,
}

/// Where pad inputs come from.
pub trait PadSource {
    /// The inputs since the last call (never blocks).
    fn poll(&mut self) -> Result<Vec<PadInput>, DeviceError>;
}

/// The controls gilrs names (and the mapping may use).
pub const CONTROLS: &[&str] = &[
    "LeftStickX",
    "LeftStickY",
    "LeftZ",
    "RightStickX",
    "RightStickY",
    "RightZ",
    "DPadX",
    "DPadY",
    "South",
    "East",
    "North",
    "West",
    "C",
    "Z",
    "LeftTrigger",
    "LeftTrigger2",
    "RightTrigger",
    "RightTrigger2",
    "Select",
    "Start",
    "Mode",
    "LeftThumb",
    "RightThumb",
    "DPadUp",
    "DPadDown",
    "DPadLeft",
    "DPadRight",
];

/// A control, possibly inverted (`-LeftStickX`).
#[derive(Debug, Clone, PartialEq)]
struct Signed {
    name: String,
    sign: f32,
}

fn control(field: &str, v: &str) -> Result<Signed, DeviceError> {
    let (sign, name) = match v.strip_prefix('-') {
        Some(n) => (-1.0, n),
        None => (1.0, v),
    };
    if !CONTROLS.contains(&name) {
        return Err(DeviceError(format!(
            "[teleop.gamepad] {field} = \"{v}\": not a gamepad control (known: {})",
            CONTROLS.join(", ")
        )));
    }
    Ok(Signed {
        name: name.into(),
        sign,
    })
}

/// A validated mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    linear: [Signed; 3],
    yaw: Signed,
    close: Signed,
    open: Signed,
    deadman: Signed,
    switch: Signed,
    home: Signed,
    quit: Signed,
    deadzone: f32,
}

impl Mapping {
    /// Check the config's names.
    pub fn new(m: &GamepadMapping) -> Result<Self, DeviceError> {
        if !(0.0..0.9).contains(&m.deadzone) {
            return Err(DeviceError(format!(
                "[teleop.gamepad] deadzone = {}: must be within 0..0.9",
                m.deadzone
            )));
        }
        Ok(Self {
            linear: [
                control("x", &m.x)?,
                control("y", &m.y)?,
                control("z", &m.z)?,
            ],
            yaw: control("yaw", &m.yaw)?,
            close: control("close", &m.close)?,
            open: control("open", &m.open)?,
            deadman: control("deadman", &m.deadman)?,
            switch: control("switch", &m.switch)?,
            home: control("home", &m.home)?,
            quit: control("quit", &m.quit)?,
            deadzone: m.deadzone,
        })
    }
}

/// A gamepad as a jog [`Device`].
pub struct Gamepad<S> {
    source: S,
    map: Mapping,
    /// Axis values and buttons (1.0 held), by control name.
    values: BTreeMap<String, f32>,
    /// Buttons pressed since the last tick (edges).
    pressed: Vec<String>,
}

impl<S: PadSource> Gamepad<S> {
    /// Read `source` through `map`.
    pub fn new(source: S, map: Mapping) -> Self {
        Self {
            source,
            map,
            values: BTreeMap::new(),
            pressed: Vec::new(),
        }
    }

    fn value(&self, c: &Signed) -> f32 {
        let v = self.values.get(&c.name).copied().unwrap_or(0.0) * c.sign;
        if v.abs() < self.map.deadzone {
            0.0
        } else {
            v.clamp(-1.0, 1.0)
        }
    }
}

impl<S: PadSource> Device for Gamepad<S> {
    fn intent(&mut self, _now: Instant) -> Result<Intent, DeviceError> {
        for i in self.source.poll()? {
            match i {
                PadInput::Axis(c, v) if v.is_finite() => {
                    self.values.insert(c, v);
                }
                PadInput::Axis(..) => {}
                PadInput::Button(c, down) => {
                    if down && self.values.get(&c).copied().unwrap_or(0.0) < 0.5 {
                        self.pressed.push(c.clone());
                    }
                    self.values.insert(c, if down { 1.0 } else { 0.0 });
                }
                PadInput::Disconnected => {
                    return Err(DeviceError("the gamepad was disconnected".into()))
                }
            }
        }
        let edge = |c: &Signed| self.pressed.contains(&c.name);
        let mut i = Intent {
            deadman: self.value(&self.map.deadman) > 0.5,
            switch: edge(&self.map.switch),
            home: edge(&self.map.home),
            quit: edge(&self.map.quit),
            ..Intent::default()
        };
        for (k, c) in self.map.linear.iter().enumerate() {
            i.linear[k] = self.value(c);
        }
        i.angular[2] = self.value(&self.map.yaw);
        let g = self.value(&self.map.open) - self.value(&self.map.close);
        if g != 0.0 {
            i.gripper = Gripper::Rate(g);
        }
        self.pressed.clear();
        Ok(i)
    }
}

/// The first gamepad gilrs finds.
pub struct Gilrs {
    gilrs: gilrs::Gilrs,
    id: gilrs::GamepadId,
    /// The pad's name.
    pub name: String,
}

impl Gilrs {
    /// Open the first connected gamepad; a clear error naming what was looked for when none is.
    pub fn open() -> Result<Self, DeviceError> {
        let gilrs = gilrs::Gilrs::new().map_err(|e| {
            DeviceError(format!(
                "the gamepad library (gilrs, evdev devices under /dev/input) failed to start: {e}"
            ))
        })?;
        let found = gilrs
            .gamepads()
            .find(|(_, g)| g.is_connected())
            .map(|(id, g)| (id, g.name().to_string()));
        let Some((id, name)) = found else {
            let readable = std::fs::read_dir("/dev/input")
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.file_name().to_string_lossy().starts_with("event"))
                        .filter(|e| std::fs::File::open(e.path()).is_ok())
                        .count()
                })
                .unwrap_or(0);
            return Err(DeviceError(format!(
                "no gamepad found: gilrs looked at the evdev devices under /dev/input/event* \
                 ({readable} readable by this user) for one with gamepad buttons and sticks. \
                 Plug one in (USB or paired over Bluetooth), and check that this user may read \
                 it (the `input` group: `sudo usermod -aG input $USER`, then log in again)"
            )));
        };
        Ok(Self { gilrs, id, name })
    }
}

fn axis_name(a: gilrs::Axis) -> Option<&'static str> {
    use gilrs::Axis as A;
    Some(match a {
        A::LeftStickX => "LeftStickX",
        A::LeftStickY => "LeftStickY",
        A::LeftZ => "LeftZ",
        A::RightStickX => "RightStickX",
        A::RightStickY => "RightStickY",
        A::RightZ => "RightZ",
        A::DPadX => "DPadX",
        A::DPadY => "DPadY",
        _ => return None,
    })
}

fn button_name(b: gilrs::Button) -> Option<&'static str> {
    use gilrs::Button as B;
    Some(match b {
        B::South => "South",
        B::East => "East",
        B::North => "North",
        B::West => "West",
        B::C => "C",
        B::Z => "Z",
        B::LeftTrigger => "LeftTrigger",
        B::LeftTrigger2 => "LeftTrigger2",
        B::RightTrigger => "RightTrigger",
        B::RightTrigger2 => "RightTrigger2",
        B::Select => "Select",
        B::Start => "Start",
        B::Mode => "Mode",
        B::LeftThumb => "LeftThumb",
        B::RightThumb => "RightThumb",
        B::DPadUp => "DPadUp",
        B::DPadDown => "DPadDown",
        B::DPadLeft => "DPadLeft",
        B::DPadRight => "DPadRight",
        _ => return None,
    })
}

impl PadSource for Gilrs {
    fn poll(&mut self) -> Result<Vec<PadInput>, DeviceError> {
        use gilrs::EventType as E;
        let mut out = Vec::new();
        while let Some(ev) = self.gilrs.next_event() {
            if ev.id != self.id {
                continue;
            }
            match ev.event {
                E::AxisChanged(a, v, _) => {
                    if let Some(n) = axis_name(a) {
                        out.push(PadInput::Axis(n.into(), v));
                    }
                }
                // analog triggers report a value; the mapping reads them as axes or buttons
                E::ButtonChanged(b, v, _) => {
                    if let Some(n) = button_name(b) {
                        out.push(PadInput::Axis(n.into(), v));
                    }
                }
                E::ButtonPressed(b, _) | E::ButtonRepeated(b, _) => {
                    if let Some(n) = button_name(b) {
                        out.push(PadInput::Button(n.into(), true));
                    }
                }
                E::ButtonReleased(b, _) => {
                    if let Some(n) = button_name(b) {
                        out.push(PadInput::Button(n.into(), false));
                    }
                }
                E::Disconnected => out.push(PadInput::Disconnected),
                _ => {}
            }
        }
        Ok(out)
    }
}

/// Injected inputs (tests, other front ends): whatever was pushed into the channel.
impl PadSource for std::sync::mpsc::Receiver<PadInput> {
    fn poll(&mut self) -> Result<Vec<PadInput>, DeviceError> {
        let mut out = Vec::new();
        loop {
            match self.try_recv() {
                Ok(i) => out.push(i),
                Err(std::sync::mpsc::TryRecvError::Empty) => return Ok(out),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    out.push(PadInput::Disconnected);
                    return Ok(out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pad() -> (
        std::sync::mpsc::Sender<PadInput>,
        Gamepad<std::sync::mpsc::Receiver<PadInput>>,
    ) {
        let (tx, rx) = std::sync::mpsc::channel();
        let map = Mapping::new(&GamepadMapping::default()).unwrap();
        (tx, Gamepad::new(rx, map))
    }

    #[test]
    fn sticks_move_only_with_the_deadman_and_buttons_act_on_their_press() {
        let (tx, mut g) = pad();
        let now = Instant::now();
        tx.send(PadInput::Axis("LeftStickY".into(), 0.8)).unwrap();
        tx.send(PadInput::Axis("LeftStickX".into(), 0.05)).unwrap();
        let i = g.intent(now).unwrap();
        assert!(!i.deadman);
        assert_eq!(
            i.linear,
            [0.8, 0.0, 0.0],
            "x from the stick, y in the deadzone"
        );
        tx.send(PadInput::Button("LeftTrigger".into(), true))
            .unwrap();
        tx.send(PadInput::Axis("RightTrigger2".into(), 0.6))
            .unwrap();
        tx.send(PadInput::Button("North".into(), true)).unwrap();
        let i = g.intent(now).unwrap();
        assert!(i.deadman && i.switch);
        assert_eq!(i.gripper, Gripper::Rate(-0.6), "the right trigger closes");
        // held, not pressed again: no second switch
        assert!(!g.intent(now).unwrap().switch);
        tx.send(PadInput::Button("LeftTrigger".into(), false))
            .unwrap();
        assert!(!g.intent(now).unwrap().deadman);
        drop(tx);
        assert!(g.intent(now).is_err(), "a lost pad ends the loop");
    }

    #[test]
    fn a_bad_mapping_names_the_key_and_the_known_controls() {
        let m = GamepadMapping {
            deadman: "LeftBumper".into(),
            ..GamepadMapping::default()
        };
        let e = Mapping::new(&m).unwrap_err().to_string();
        assert!(
            e.contains("deadman = \"LeftBumper\"") && e.contains("LeftTrigger"),
            "{e}"
        );
    }
}
