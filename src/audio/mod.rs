//! TODO(skeleton): `audio` layer (docs/architecture.md).
