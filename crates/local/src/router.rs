//! The HTTP router of a service: splits requests across revisions by weight.
