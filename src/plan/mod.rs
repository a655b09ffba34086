//! TODO(skeleton): `plan` layer (docs/architecture.md).
