"""The portal: server-rendered pages for citizens, units' staff, the supervision office, the public and admins.

It owns no case data: every page is built from intake's and stats' HTTP APIs, called with the signed-in
person's bearer token (docs/people-api.md).
"""
