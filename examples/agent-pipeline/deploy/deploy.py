"""The release manifest of a bundle (what the deploy job would send to its host: a stand-in for
Render or Vercel, which need accounts and the network): python3 deploy.py BUNDLE"""
import hashlib
import json
import os
import sys

bundle = sys.argv[1]
with open(bundle, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()
print(json.dumps({"artifact": os.path.basename(bundle), "sha256": digest, "target": "staging"},
                 indent=2))
