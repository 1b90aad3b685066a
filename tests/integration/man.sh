#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The man pages render without warnings, and every option the CLI's --help lists is documented.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"

require_cmd groff
require_cmd mandoc
require_build

top=$(cd "$(dirname "$0")/../.." && pwd)
for page in "$top"/man/*.[0-9]; do
	out=$(groff -mdoc -ww -z "$page" 2>&1) || die "groff failed on $page: $out"
	[[ -z $out ]] || die "groff warns on $page: $out"
	out=$(mandoc -T lint -W warning "$page" 2>&1 | grep -v 'mandoc.db' || true)
	[[ -z $out ]] || die "mandoc warns on $page: $out"
	log "$(basename "$page"): clean"
done

sed 's/\\-/-/g' "$top/man/livesnap.1" >"$TEST_TMP/livesnap.1.txt"
for verb in dump info verify cat export checkpoint list show delete jobs cancel; do
	"$LIVESNAP" "$verb" --help >"$TEST_TMP/help" || die "livesnap $verb --help failed"
	grep -q "livesnap $verb" "$TEST_TMP/help" || die "livesnap $verb --help shows no usage line"
	for opt in $(grep -oE -- '--[a-z][a-z-]+' "$TEST_TMP/help" | sort -u); do
		[[ $opt == --help ]] && continue
		grep -qF -- "Fl ${opt#-}" "$TEST_TMP/livesnap.1.txt" ||
			die "livesnap $verb --help lists $opt, which man/livesnap.1 does not document"
	done
done
log "every option of every command's --help is in livesnap(1)"
