//! TODO(skeleton): `exec` layer (docs/architecture.md).
