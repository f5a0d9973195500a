#!/usr/bin/env bash
# Lists every function in src/ longer than a limit (default 100 lines,
# counted from the line that starts the `fn` to its closing brace), tests
# excluded: issue 14 keeps functions short enough to read in one screen.
#
#   scripts/long_functions.sh          functions over 100 lines
#   scripts/long_functions.sh 60       functions over 60 lines
#
# Prints `LINES FILE:LINE NAME`, longest first; exits 1 when any is found.
# Plain text reading, no compiler, and the same rules as
# tests/function_length.rs: a function ends at the first `}` line at the
# indentation of its `fn` line (rustfmt's layout); `#[cfg(test)]` items and
# `tests.rs` files are skipped; declarations without a body are not counted.
set -euo pipefail
cd "$(dirname "$0")/.."
limit=${1:-100}

found=$(find src -name '*.rs' ! -name tests.rs -print0 | sort -z | xargs -0 awk -v limit="$limit" '
    # A new file: forget any item left open in the previous one.
    FNR == 1 { fn_open = 0; skip_open = 0; pending_test = 0; in_sig = 0 }
    {
        line = $0
        match(line, /^[ \t]*/); indent = substr(line, 1, RLENGTH)
    }
    # Inside a #[cfg(test)] item: skip to its closing brace.
    skip_open {
        if (line == skip_indent "}") skip_open = 0
        next
    }
    # #[cfg(test)] (or cfg(all(test, …))): the next item is test-only.
    line ~ /^[ \t]*#\[cfg\((all\()?test[,)]/ { pending_test = 1; next }
    pending_test && line ~ /^[ \t]*#\[/ { next }
    pending_test {
        pending_test = 0
        # A one-line item (`use …;`, `mod x;`) has nothing to skip.
        if (line !~ /;[ \t]*$/ && line !~ /}[ \t]*$/) { skip_open = 1; skip_indent = indent }
        next
    }
    # Inside a function: look for its end.
    fn_open {
        if (in_sig) {
            # The signature ends with `;`: a declaration, not a body.
            if (line ~ /;[ \t]*$/ && line !~ /{/) { fn_open = 0; in_sig = 0; next }
            if (line ~ /{[ \t]*$/ || line ~ /^[ \t]*{/) in_sig = 0
        }
        if (line == fn_indent "}") {
            n = FNR - fn_start + 1
            if (n > limit) printf "%d %s:%d %s\n", n, FILENAME, fn_start, fn_name
            fn_open = 0
        }
        next
    }
    line ~ /^[ \t]*(pub(\([^)]*\))? +)?((const|async|unsafe|extern( +"[^"]*")?) +)*fn +[A-Za-z_][A-Za-z0-9_]*/ {
        # A whole function on one line, or a declaration: nothing to count.
        if (line ~ /}[ \t]*$/ || line ~ /;[ \t]*$/) next
        name = line
        sub(/^.*fn +/, "", name); sub(/[^A-Za-z0-9_].*$/, "", name)
        fn_open = 1; fn_start = FNR; fn_indent = indent; fn_name = name
        in_sig = (line !~ /{[ \t]*$/)
    }
' | sort -rn)

if [ -n "$found" ]; then
    printf '%s\n' "$found"
    exit 1
fi
