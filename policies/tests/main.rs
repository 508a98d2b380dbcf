//! The policies crate's integration tests, one binary: numerical parity with lerobot's PyTorch
//! implementations, on checkpoints lerobot itself builds with random weights.

mod act;
mod smolvla;
