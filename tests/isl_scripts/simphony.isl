// islrun's own test script: Simphony's additions. NetImport and dotted .NET calls (a
// statement and an expression), lvar, Try / Catch / EndTry, a named inquiry.
NetImport from "C:\Micros\Simphony\Extensions\Loyalty.Client.dll"

Event Inq : ShowTotals
    lvar total : $12
    lvar name : A20
    total = Loyalty.Client.Api.Total(@CKNUM)
    Loyalty.Client.Api.Log("totals", total)
    Try
        name = Loyalty.Client.Api.Member(@CKNUM)
        InfoMessage "Member", name
    Catch
        InfoMessage "No member"
    EndTry
    InfoMessage "Total", total
EndEvent
