//! Simulation engine.
