//! TODO(skeleton): `spec` layer (docs/architecture.md).
