//! Top-level error type and the stable exit codes (docs/exit-codes.md).
