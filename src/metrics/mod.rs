//! TODO(skeleton): `metrics` layer (docs/architecture.md).
