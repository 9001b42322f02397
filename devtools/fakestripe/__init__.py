"""Dev and test tooling: localstripe with a thin fidelity layer. GPL-3.0-or-later; see LICENSE-NOTICE.md."""
