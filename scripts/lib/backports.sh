# Debian's bookworm-backports suite through a private apt configuration (sourced by scripts).
# The host's apt sources, lists and installed packages are never changed: the configuration, its
# package lists and every .deb live under cvbench's cache, and what is fetched is unpacked there
# with `dpkg-deb -x`, never installed.
#
#   bpo_init DIR        make (or reuse) the private configuration under DIR; sets the array
#                       BPO_APT to the apt options that select it. Runs `apt-get update` on it
#                       once a day.
#   bpo_version PKG     the version bookworm-backports offers of PKG (empty if none)
#   bpo_fetch DEST PKG=VERSION...   apt-get download into DEST (a directory)

# The mirror: the one the host already uses for bookworm (no host is named here).
bpo_mirror() {
    apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(IDENTIFIER)' 2>/dev/null \
        | awk '$2 == "bookworm" && $3 == "Packages" { print $1; exit }'
}

bpo_init() {
    local dir=$1 mirror keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    mirror=$(bpo_mirror)
    if [ -z "$mirror" ]; then
        echo "backports: the host's apt has no bookworm suite to take the mirror from" >&2
        return 1
    fi
    [ -r "$keyring" ] || { echo "backports: $keyring missing (apt-get install debian-archive-keyring)" >&2; return 1; }
    mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/parts"
    printf 'deb [signed-by=%s] %s bookworm main\ndeb [signed-by=%s] %s bookworm-backports main\n' \
        "$keyring" "$mirror" "$keyring" "$mirror" > "$dir/sources.list"
    BPO_APT=(-o "Dir::Etc::SourceList=$dir/sources.list" -o "Dir::Etc::SourceParts=$dir/parts"
             -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache" -o "APT::Sandbox::User=root")
    local stamp="$dir/lists/.updated"
    if [ ! -e "$stamp" ] || [ -n "$(find "$stamp" -mmin +1440 2>/dev/null)" ]; then
        apt-get "${BPO_APT[@]}" update -qq >/dev/null 2>&1 \
            || { echo "backports: apt-get update of the private configuration failed" >&2; return 1; }
        touch "$stamp"
    fi
}

bpo_version() {
    apt-cache "${BPO_APT[@]}" show "$1" 2>/dev/null | sed -n 's/^Version: //p' | grep -F '~bpo' | sort -V | tail -1
}

bpo_fetch() {
    local dest=$1; shift
    mkdir -p "$dest"
    (cd "$dest" && apt-get "${BPO_APT[@]}" download -qq "$@" >/dev/null 2>&1)
}
