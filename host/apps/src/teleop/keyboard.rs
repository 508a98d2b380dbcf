//! Keyboard teleoperation in any terminal, also over SSH (no X display: the terminal's own key
//! events, read in raw mode). Hold to move:
//!
//! | keys | motion |
//! |---|---|
//! | `w` / `s` | ±x, forward / back |
//! | `a` / `d` | ±y, left / right |
//! | `r` / `f` | ±z, up / down |
//! | `u` / `o`, `i` / `k`, `j` / `l` | rotate about the TCP's x, y, z axes |
//! | space | open / close the gripper |
//! | Tab | next part: `r_arm` → `l_arm` → head (look direction) |
//! | `h` | the arm home (a goto) |
//! | Esc, `q`, Ctrl-C | quit, holding the pose |
//!
//! A key moves while the terminal repeats it and stops [`HOLD`] after its last repeat (at once
//! on its release where the terminal reports releases: the kitty keyboard protocol).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::jog::{Device, DeviceError, Gripper, Intent};

/// How long a key keeps moving after its last press or repeat.
pub const HOLD: Duration = Duration::from_millis(250);

/// Key events with their time, from the terminal's thread.
pub type KeyEvents = mpsc::Receiver<(Key, KeyKind, Instant)>;

/// A key, as the jog needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    /// A character key (lower case).
    Char(char),
    /// Tab.
    Tab,
    /// Escape.
    Esc,
    /// Ctrl-C (raw mode swallows its signal).
    CtrlC,
    /// Anything else.
    Other,
}

/// Press, terminal repeat or release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// First press.
    Press,
    /// Auto-repeat.
    Repeat,
    /// Release (only terminals with the kitty keyboard protocol report it).
    Release,
}

/// Which axis (0..3 linear, 3..6 angular) and sign a key jogs.
fn axis(c: char) -> Option<(usize, f32)> {
    Some(match c {
        'w' => (0, 1.0),
        's' => (0, -1.0),
        'a' => (1, 1.0),
        'd' => (1, -1.0),
        'r' => (2, 1.0),
        'f' => (2, -1.0),
        'u' => (3, 1.0),
        'o' => (3, -1.0),
        'i' => (4, 1.0),
        'k' => (4, -1.0),
        'j' => (5, 1.0),
        'l' => (5, -1.0),
        _ => return None,
    })
}

/// The keys' help line.
pub const HELP: &str = "w/s ±x  a/d ±y  r/f ±z  u/o i/k j/l rotate  space gripper  Tab next part  \
                        h home  Esc/q quit";

/// The keyboard's state: which keys are held, and the one-shot keys pressed since the last tick.
#[derive(Debug)]
pub struct Keyboard {
    held: BTreeMap<char, Instant>,
    intent: Intent,
    events: Option<KeyEvents>,
    _terminal: Option<Terminal>,
}

impl Default for Keyboard {
    fn default() -> Self {
        Self::new()
    }
}

impl Keyboard {
    /// A keyboard fed by [`Keyboard::event`] (tests, other front ends).
    pub fn new() -> Self {
        Self {
            held: BTreeMap::new(),
            intent: Intent::default(),
            events: None,
            _terminal: None,
        }
    }

    /// The keyboard of this process's terminal (raw mode until dropped). Fails when stdin is not
    /// a terminal.
    pub fn terminal() -> Result<Self, DeviceError> {
        let (t, rx) = Terminal::start()?;
        Ok(Self {
            events: Some(rx),
            _terminal: Some(t),
            ..Self::new()
        })
    }

    /// A keyboard fed by key events from another thread (a benchmark, another front end).
    pub fn from_events(rx: KeyEvents) -> Self {
        Self {
            events: Some(rx),
            ..Self::new()
        }
    }

    /// A key event at `at`.
    pub fn event(&mut self, key: Key, kind: KeyKind, at: Instant) {
        match (key, kind) {
            (Key::Char(c), KeyKind::Release) if axis(c).is_some() => {
                self.held.remove(&c);
            }
            (_, KeyKind::Release) => {}
            (Key::Char(c), _) if axis(c).is_some() => {
                self.held.insert(c, at);
            }
            // one-shot keys act on their press, not their repeats
            (_, KeyKind::Repeat) => {}
            (Key::Char(' '), _) => self.intent.gripper = Gripper::Toggle,
            (Key::Tab, _) => self.intent.switch = true,
            (Key::Char('h'), _) => self.intent.home = true,
            (Key::Esc | Key::Char('q') | Key::CtrlC, _) => self.intent.quit = true,
            (Key::Char(c), _) => {
                self.intent.message = Some(format!("key `{c}` does nothing ({HELP})"))
            }
            (Key::Other, _) => {
                self.intent.message = Some(format!("that key does nothing ({HELP})"))
            }
        }
    }
}

impl Device for Keyboard {
    fn intent(&mut self, now: Instant) -> Result<Intent, DeviceError> {
        if let Some(rx) = self.events.take() {
            let r = loop {
                match rx.try_recv() {
                    Ok((k, kind, at)) => self.event(k, kind, at),
                    Err(mpsc::TryRecvError::Empty) => break Ok(()),
                    Err(mpsc::TryRecvError::Disconnected) => {
                        break Err(DeviceError("the terminal closed".into()))
                    }
                }
            };
            self.events = Some(rx);
            r?;
        }
        self.held
            .retain(|_, at| now.saturating_duration_since(*at) < HOLD);
        let mut i = std::mem::take(&mut self.intent);
        let mut v = [0.0f32; 6];
        for c in self.held.keys() {
            if let Some((a, s)) = axis(*c) {
                v[a] += s;
            }
        }
        i.linear.copy_from_slice(&v[..3]);
        i.angular.copy_from_slice(&v[3..]);
        i.deadman = true;
        Ok(i)
    }
}

/// This process's terminal in raw mode, its key events read on a thread.
#[derive(Debug)]
struct Terminal {
    done: Arc<AtomicBool>,
    enhanced: bool,
}

impl Terminal {
    fn start() -> Result<(Self, KeyEvents), DeviceError> {
        use crossterm::event::{KeyboardEnhancementFlags, PushKeyboardEnhancementFlags};
        use std::io::IsTerminal;
        if !std::io::stdin().is_terminal() {
            return Err(DeviceError(
                "the keyboard source reads a terminal, and stdin is not one (run it in a \
                 terminal or over `ssh -t`)"
                    .into(),
            ));
        }
        crossterm::terminal::enable_raw_mode()
            .map_err(|e| DeviceError(format!("the terminal's raw mode: {e}")))?;
        // key releases where the terminal can report them (kitty's protocol)
        let enhanced = crossterm::terminal::supports_keyboard_enhancement().unwrap_or(false)
            && crossterm::execute!(
                std::io::stdout(),
                PushKeyboardEnhancementFlags(KeyboardEnhancementFlags::REPORT_EVENT_TYPES)
            )
            .is_ok();
        let (tx, rx) = mpsc::channel();
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        std::thread::Builder::new()
            .name("keyboard".into())
            .spawn(move || {
                use crossterm::event::{poll, read, Event, KeyCode, KeyEventKind, KeyModifiers};
                while !d.load(Ordering::Relaxed) {
                    match poll(Duration::from_millis(50)) {
                        Ok(false) => continue,
                        Ok(true) => {}
                        Err(_) => break,
                    }
                    let ev = match read() {
                        Ok(Event::Key(k)) => k,
                        Ok(_) => continue,
                        Err(_) => break,
                    };
                    let kind = match ev.kind {
                        KeyEventKind::Press => KeyKind::Press,
                        KeyEventKind::Repeat => KeyKind::Repeat,
                        KeyEventKind::Release => KeyKind::Release,
                    };
                    let key = match ev.code {
                        KeyCode::Char('c') if ev.modifiers.contains(KeyModifiers::CONTROL) => {
                            Key::CtrlC
                        }
                        KeyCode::Char(c) => Key::Char(c.to_ascii_lowercase()),
                        KeyCode::Tab => Key::Tab,
                        KeyCode::Esc => Key::Esc,
                        _ => Key::Other,
                    };
                    if tx.send((key, kind, Instant::now())).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| DeviceError(format!("starting the keyboard thread: {e}")))?;
        Ok((Self { done, enhanced }, rx))
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if self.enhanced {
            let _ = crossterm::execute!(
                std::io::stdout(),
                crossterm::event::PopKeyboardEnhancementFlags
            );
        }
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_keys_move_until_their_repeats_stop() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let mut k = Keyboard::new();
        k.event(Key::Char('w'), KeyKind::Press, ms(0));
        k.event(Key::Char('d'), KeyKind::Press, ms(0));
        let i = k.intent(ms(10)).unwrap();
        assert_eq!(i.linear, [1.0, -1.0, 0.0]);
        // repeats keep `w` going; `d` was not repeated
        for t in (30..=600).step_by(30) {
            k.event(Key::Char('w'), KeyKind::Repeat, ms(t));
        }
        let i = k.intent(ms(610)).unwrap();
        assert_eq!(i.linear, [1.0, 0.0, 0.0]);
        // stops within HOLD of the last repeat
        assert_eq!(k.intent(ms(600) + HOLD).unwrap().linear, [0.0; 3]);
        // a release stops it at once
        k.event(Key::Char('j'), KeyKind::Press, ms(700));
        assert_eq!(k.intent(ms(701)).unwrap().angular, [0.0, 0.0, 1.0]);
        k.event(Key::Char('j'), KeyKind::Release, ms(702));
        assert_eq!(k.intent(ms(703)).unwrap().angular, [0.0; 3]);
    }

    #[test]
    fn one_shot_keys_act_once_and_unknown_keys_say_so() {
        let t0 = Instant::now();
        let mut k = Keyboard::new();
        k.event(Key::Char(' '), KeyKind::Press, t0);
        k.event(Key::Char(' '), KeyKind::Repeat, t0);
        k.event(Key::Tab, KeyKind::Press, t0);
        let i = k.intent(t0).unwrap();
        assert_eq!(i.gripper, Gripper::Toggle);
        assert!(i.switch && !i.home && !i.quit);
        let i = k.intent(t0).unwrap();
        assert_eq!(i.gripper, Gripper::Keep, "once per press");
        assert!(!i.switch);
        k.event(Key::Char('z'), KeyKind::Press, t0);
        let i = k.intent(t0).unwrap();
        assert!(i.message.unwrap().contains("`z` does nothing"));
        assert_eq!(i.linear, [0.0; 3]);
        k.event(Key::Char('q'), KeyKind::Press, t0);
        assert!(k.intent(t0).unwrap().quit);
    }
}
