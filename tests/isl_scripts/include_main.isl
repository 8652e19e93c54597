// islrun's own test script: Include brings declarations, events and subs from another file.
RetainGlobalVar
Include "include_lib.isl"

Event Inq : 1
    Call Greet
    InfoMessage gGreeting
EndEvent
