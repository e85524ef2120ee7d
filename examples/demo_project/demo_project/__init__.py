"""The demo's Scrapy project: a catalogue spider rendered through a Splash cluster."""
