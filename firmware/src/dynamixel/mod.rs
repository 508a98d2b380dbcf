//! Dynamixel Protocol 2.0: CRC, packets (stuffing, streaming decoder), the X-series control
//! table and a bus master with timeouts and retries.

pub mod control_table;
pub mod crc;
pub mod master;
pub mod packet;

pub use control_table::{Model, Register};
pub use master::{BusError, BusStats, Clock, Master, PingInfo};
pub use packet::{Decoder, Event, Instruction, Packet, BROADCAST_ID};
