//! TODO(skeleton): `corpus` layer (docs/architecture.md).
