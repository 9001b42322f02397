import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
application = get_wsgi_application()

# Everything loaded so far (Django, the apps, their modules) lives as long as the process: keep it out
# of the garbage collector's full passes. A batch of 1,000 events leaves enough short-lived containers
# to set off a full pass every few requests, and each one scanned all of that, 70 to 90 ms a time.
gc.freeze()
