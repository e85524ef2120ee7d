"""Settings of the demo project: an ordinary Scrapy project plus the add-on.

What scrapy-splash-cluster needs is two settings, ADDONS and SPLASH_URLS;
everything below them makes the demo easy to watch.
"""

import os

BOT_NAME = "demo_project"
SPIDER_MODULES = ["demo_project.spiders"]
NEWSPIDER_MODULE = "demo_project.spiders"

# One line puts the cluster's middleware, download handler and fingerprinter
# in place.
ADDONS = {"scrapy_splash_cluster.SplashClusterAddon": 0}

# The Splash nodes, comma-separated: from the environment, or from the
# command line (`scrapy crawl catalogue -s SPLASH_URLS=http://...,http://...`),
# which takes precedence. Empty, the crawl stops at once and says so.
SPLASH_URLS = os.environ.get("SPLASH_URLS", "")

# Probe every node each half second; DOWN after 2 failed probes, UP again
# after 2 good ones. Production values can be slower (the default probes
# every 2 s); quick ones let the demo's kill and restart show within a second.
SPLASH_CLUSTER_HEALTH_INTERVAL = 0.5
SPLASH_CLUSTER_FALL = 2
SPLASH_CLUSTER_RISE = 2

# Every page is on one host: let the per-domain limit match the global one.
CONCURRENT_REQUESTS = 5
CONCURRENT_REQUESTS_PER_DOMAIN = 5

# The demo site has no robots.txt to obey.
ROBOTSTXT_OBEY = False
# No consoles: the demo needs neither the telnet console nor Scrapy's remote
# control server (which also writes a job file into the user's profile).
TELNETCONSOLE_ENABLED = False
REMOTE_CONTROL_ENABLED = False

# A progress line every second, in a short format that fits a terminal.
LOGSTATS_INTERVAL = 1
LOG_LEVEL = "INFO"
LOG_FORMAT = "%(asctime)s [%(name)s] %(levelname)s: %(message)s"
LOG_DATEFORMAT = "%H:%M:%S"

# The final stats as JSON, for run_demo.py's report (see extensions.py); off
# unless DEMO_STATS_FILE names a file.
EXTENSIONS = {"demo_project.extensions.StatsFile": 500}
DEMO_STATS_FILE = os.environ.get("DEMO_STATS_FILE", "")

FEED_EXPORT_ENCODING = "utf-8"
