//! The built-in prelude: the `.star` files of the repository's `rules/` folder, compiled into
//! the binary. Their public symbols are available in every BUILD.star and `.star` file.

/// (name, source) of each prelude file, evaluated in this order.
pub(crate) const PRELUDE: &[(&str, &str)] = &[(
    "@cairn//rules/prelude.star",
    include_str!("../../rules/prelude.star"),
)];
