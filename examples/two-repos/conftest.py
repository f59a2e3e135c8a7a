# The releases under modules/ are the history make.py commits and tags: their tests run in
# the repository it builds (they deploy older tags of it), never from here.
collect_ignore = ["modules"]
