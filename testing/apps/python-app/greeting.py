def greet(word):
    return "%s from python-app" % word
