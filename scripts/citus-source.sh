# Where the Citus source archive is looked for (sourced by build-citus.sh and bootstrap.sh; the
# Python side, stepledger.stack.citus.source_dir, follows the same order):
#   1. $STEPLEDGER_CITUS_SOURCE (a folder holding citus-13.2.2.tar.gz);
#   2. ../shared/citus/ beside the repository;
#   3. ../shared/citus/ beside the main checkout, when this repository is a linked git worktree.

citus_source_candidates() {
    local repo="$1" common
    [[ -n ${STEPLEDGER_CITUS_SOURCE:-} ]] && echo "$STEPLEDGER_CITUS_SOURCE"
    echo "$(cd "$repo/.." && pwd)/shared/citus"
    if common="$(git -C "$repo" rev-parse --path-format=absolute --git-common-dir 2>/dev/null)"; then
        local main_checkout
        main_checkout="$(dirname "$common")"
        [[ $main_checkout != "$repo" ]] && echo "$(dirname "$main_checkout")/shared/citus"
    fi
    return 0
}

# Prints the first candidate folder that holds the archive; fails when none does.
citus_source_dir() {
    local dir
    while IFS= read -r dir; do
        if [[ -f $dir/citus-13.2.2.tar.gz ]]; then
            echo "$dir"
            return 0
        fi
    done < <(citus_source_candidates "$1")
    return 1
}
