#!/bin/bash
# Description: every configuration key is documented in docs/hutch.conf.md, with its default.
. "$(dirname "$0")/../functions.sh"

doc="$HUTCH_SRC/docs/hutch.conf.md"
[ -f "$doc" ] || fail "no $doc"
section=
while IFS= read -r line; do
	case "$line" in
	"["*"]") section=${line#[}; section=${section%]}
		grep -q "^## \[$section\]" "$doc" || fail "section [$section] is not documented in docs/hutch.conf.md" ;;
	"#"*|"") ;;
	*" = "*)
		key=${line%% = *}
		grep -q "^| \`$key\` |" "$doc" || fail "key [$section] $key is not documented in docs/hutch.conf.md" ;;
	esac
done < <(hutch-storaged --help-config)
exit 0
