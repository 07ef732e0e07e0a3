"""A migration job: prepares the orders database of its region, then exits."""

import os
import sqlite3

region = os.environ.get("MAHAVISHNU_REGION", "local")
path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"shop-{region}-{os.getuid()}.db")
db = sqlite3.connect(path)
db.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL)")
db.commit()
print("migrated", path, flush=True)
