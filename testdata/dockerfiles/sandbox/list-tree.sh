#!/bin/sh
# Prints every path of the root with its type, mode, owner, size, mtime,
# link target and content hash, one line each, sorted. Run in the sandbox
# (the RUN's view) and in a chroot of umoci's unpack. Link counts are left
# out: overlayfs shows a lower file's count even after a later layer
# deleted one of its names.
cd / || exit 1
find . -xdev | sort | while read -r f; do
  case "$f" in
    .|./proc|./sys|./dev|./etc/hosts|./etc/resolv.conf|./list-tree) continue ;;
  esac
  type=$(stat -c %F "$f")
  target=; hash=; size=; mtime=$(stat -c %Y "$f")
  case "$type" in
    "regular file"|"regular empty file") size=$(stat -c %s "$f"); hash=$(md5sum < "$f" | cut -c1-32) ;;
    "symbolic link") target=$(readlink "$f") ;;
  esac
  # /etc's mtime moves when the sandbox creates its /etc/hosts mount point.
  [ "$f" = ./etc ] && mtime=-
  echo "$f|$type|$(stat -c '%a|%u|%g' "$f")|$size|$mtime|$target|$hash"
done
