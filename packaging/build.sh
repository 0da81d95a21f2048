#!/bin/sh
# Build the .deb or the .rpm from a clean copy of the tree, so the build
# leaves nothing in the checkout; the package lands in dist/.
# usage: packaging/build.sh deb|rpm|tools    (tools: also the linters)
# PKG_VERSION=X.Y.Z builds that version instead of VERSION's (a test
# build: the copy's VERSION, changelog and spec say X.Y.Z).
set -e
kind=$1
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
version=$(cat VERSION)

# Tools: Debian packages only (rpmbuild works on Debian), installed when
# missing, as packaging/deps.sh does. Arguments: command:package ..., or
# =:package for a package without a command (dpkg-buildpackage wants
# build-essential).
installed() {
	dpkg-query -W -f '${Status}' "$1" 2>/dev/null | grep -q 'ok installed'
}
install_missing() {
	need=""
	for cp in "$@"; do
		case ${cp%%:*} in
		=)	installed "${cp#*:}" || need="$need ${cp#*:}" ;;
		*)	command -v "${cp%%:*}" >/dev/null 2>&1 || need="$need ${cp#*:}" ;;
		esac
	done
	[ -z "$need" ] && return 0
	if [ "$(id -u)" != 0 ]; then
		echo "licproxy: missing packages:$need (run as root or: sudo apt-get install$need)" >&2
		exit 1
	fi
	echo "licproxy: installing$need" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y --no-install-recommends $need >/dev/null 2>&1 ||
		{ apt-get update >/dev/null && apt-get install -y --no-install-recommends $need; }
}
case $kind in
deb)	install_missing dpkg-buildpackage:dpkg-dev dh:debhelper =:build-essential ;;
rpm)	install_missing rpmbuild:rpm ;;
tools)	install_missing dpkg-buildpackage:dpkg-dev dh:debhelper =:build-essential rpmbuild:rpm \
	    lintian:lintian rpmlint:rpmlint systemd-analyze:systemd
	exit 0 ;;
*)	echo "usage: $0 deb|rpm|tools" >&2; exit 2 ;;
esac

# One version: the changelog and the spec must say what VERSION says.
deb_v=$(sed -n '1s/^licproxy (\([^)-]*\).*/\1/p' packaging/debian/changelog)
rpm_v=$(sed -n 's/^Version:[[:space:]]*//p' packaging/rpm/licproxy.spec)
if [ "$deb_v" != "$version" ] || [ "$rpm_v" != "$version" ]; then
	echo "licproxy: VERSION says $version, packaging/debian/changelog $deb_v," \
	    "packaging/rpm/licproxy.spec $rpm_v: make them agree" >&2
	exit 1
fi
v=${PKG_VERSION:-$version}

tmp=$(mktemp -d /tmp/licproxy-pkg.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
src=$tmp/licproxy-$v
mkdir -p "$src" "$top/dist"
# The files git knows plus new ones it does not ignore, as they are now.
if git rev-parse --git-dir >/dev/null 2>&1; then
	git ls-files -z --cached --others --exclude-standard |
	    xargs -0 sh -c 'for f; do if [ -e "$f" ] || [ -L "$f" ]; then
	        printf "%s\0" "$f"; fi; done' sh |
	    tar --null --no-recursion -T - -cf - | tar -xf - -C "$src"
else
	tar --exclude=./build --exclude=./build-san --exclude=./dist \
	    --exclude=./.git -cf - . | tar -xf - -C "$src"
fi

# The man pages say the version they ship with.
sed -i "1s/\"licproxy [^\"]*\"/\"licproxy $v\"/" \
    "$src/packaging/licproxy.8" "$src/packaging/licproxy.yaml.5"
if [ "$v" != "$version" ]; then
	echo "$v" >"$src/VERSION"
	sed -i "s/^Version:.*/Version:        $v/" "$src/packaging/rpm/licproxy.spec"
	{
		printf 'licproxy (%s) unstable; urgency=medium\n\n' "$v"
		printf '  * Test build of %s.\n\n' "$v"
		sed -n '3,/^ -- /{/^ -- /p}' packaging/debian/changelog
		printf '\n'
		cat packaging/debian/changelog
	} >"$src/packaging/debian/changelog"
fi

if [ "$kind" = deb ]; then
	arch=$(dpkg-architecture -qDEB_HOST_ARCH)
	ln -s packaging/debian "$src/debian"
	(cd "$src" && dpkg-buildpackage -us -uc -b) >"$tmp/build.log" 2>&1 ||
		{ tail -n 40 "$tmp/build.log" >&2; exit 1; }
	out=licproxy_${v}_${arch}.deb
	cp "$tmp/$out" "$top/dist/$out"
else
	tar -C "$tmp" -czf "$tmp/licproxy-$v.tar.gz" "licproxy-$v"
	# --nodeps: the BuildRequires name Fedora packages; here the Debian
	# ones (packaging/deps.sh) provide the same libraries.
	rpmbuild --define "_topdir $tmp/rpmbuild" --define "_sourcedir $tmp" \
	    --nodeps -bb "$src/packaging/rpm/licproxy.spec" >"$tmp/build.log" 2>&1 ||
		{ tail -n 40 "$tmp/build.log" >&2; exit 1; }
	for f in "$tmp"/rpmbuild/RPMS/*/licproxy-"$v"-*.rpm; do
		case $f in *debuginfo*|*debugsource*) continue ;; esac
		out=$(basename "$f")
		cp "$f" "$top/dist/$out"
	done
fi
echo "dist/$out"
