//! TODO(skeleton): `model` layer (docs/architecture.md).
